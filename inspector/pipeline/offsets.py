"""Per-partition offset bookkeeping: offset N+1 becomes committable only when every tracked record
up to N has been acknowledged (its verdict is on the broker).

Each assignment of a partition gets a new *generation*; acknowledgements carry the generation
they were tracked under, so a late ack for a revoked (or revoked and re-assigned) partition can
never move a commit forward. Thread-safe: tracked and committed on the consumer thread, acked
from producer callbacks.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P", bound=Hashable)


@dataclass
class _Partition:
    generation: int
    inflight: deque[int] = field(default_factory=deque)  # tracked offsets, ascending
    acked: set[int] = field(default_factory=set)  # acked offsets still behind an unacked one
    next_offset: int | None = None  # last tracked + 1
    committed: int | None = None  # last offset handed out as committed


@dataclass(frozen=True)
class Ticket(Generic[P]):
    """What a record carries to acknowledge itself later."""

    partition: P
    offset: int
    generation: int


class OffsetTracker(Generic[P]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[P, _Partition] = {}
        self._generation = 0

    # -- assignment -------------------------------------------------------------------------
    def assign(self, partitions: Iterable[P]) -> None:
        """Start (or restart) tracking: a fresh generation for each partition."""
        with self._lock:
            for p in partitions:
                self._generation += 1
                self._parts[p] = _Partition(self._generation)

    def revoke(self, partitions: Iterable[P]) -> None:
        """Forget partitions; later acks for them are ignored."""
        with self._lock:
            for p in partitions:
                self._parts.pop(p, None)

    def assigned(self) -> list[P]:
        with self._lock:
            return list(self._parts)

    # -- records ----------------------------------------------------------------------------
    def track(self, partition: P, offset: int) -> Ticket[P]:
        """Register a polled record; offsets must increase within one assignment."""
        with self._lock:
            part = self._parts.get(partition)
            if part is None:
                raise KeyError(f"partition {partition!r} is not assigned")
            if part.next_offset is not None and offset < part.next_offset:
                raise ValueError(f"offset {offset} of {partition!r} tracked out of order")
            part.inflight.append(offset)
            part.next_offset = offset + 1
            return Ticket(partition, offset, part.generation)

    def ack(self, ticket: Ticket[P]) -> bool:
        """Mark a record done; False when its partition was revoked meanwhile (ignored)."""
        with self._lock:
            part = self._parts.get(ticket.partition)
            if part is None or part.generation != ticket.generation:
                return False
            if ticket.offset in part.acked:
                return True
            part.acked.add(ticket.offset)
            while part.inflight and part.inflight[0] in part.acked:
                part.acked.discard(part.inflight.popleft())
            return True

    def is_current(self, ticket: Ticket[P]) -> bool:
        with self._lock:
            part = self._parts.get(ticket.partition)
            return part is not None and part.generation == ticket.generation

    # -- commits ----------------------------------------------------------------------------
    def _commit_point(self, part: _Partition) -> int | None:
        if part.inflight:
            return part.inflight[0]  # everything below the oldest unacked record is done
        return part.next_offset

    def committable(self, partitions: Iterable[P] | None = None) -> dict[P, int]:
        """Offsets (next record to read) that advanced past the last commit."""
        with self._lock:
            out: dict[P, int] = {}
            for p, part in self._parts.items():
                if partitions is not None and p not in partitions:
                    continue
                point = self._commit_point(part)
                if point is not None and (part.committed is None or point > part.committed):
                    out[p] = point
            return out

    def mark_committed(self, offsets: dict[P, int]) -> None:
        with self._lock:
            for p, off in offsets.items():
                part = self._parts.get(p)
                if part is not None and (part.committed is None or off > part.committed):
                    part.committed = off

    def pending(self, partitions: Iterable[P] | None = None) -> int:
        """Tracked records not yet acknowledged."""
        with self._lock:
            wanted = None if partitions is None else set(partitions)
            return sum(
                len(part.inflight) - len(part.acked)
                for p, part in self._parts.items()
                if wanted is None or p in wanted
            )

    def last_tracked(self, partition: P) -> int | None:
        """The next offset after the last tracked one (the consumer's own position)."""
        with self._lock:
            part = self._parts.get(partition)
            return None if part is None else part.next_offset
