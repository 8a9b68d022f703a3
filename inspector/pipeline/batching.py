"""The micro-batcher: one queue per model, a batch is flushed when it is full or when its first
item has waited ``max_delay`` (the Triton dynamic-batching rule). A batch holds one model.

Thread-safe; ``put`` is bounded (blocks or refuses when ``max_items`` are waiting).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Batch(Generic[T]):
    model: str
    items: list[T]
    waited_s: float  # how long the first item waited before the flush
    full: bool  # flushed because it reached max_batch
    weight: int = 0  # engine work units in it (frames, or tiles of tiled models)


class MicroBatcher(Generic[T]):
    def __init__(
        self,
        max_batch: int,
        max_delay_s: float,
        max_items: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch < 1 or max_items < 1 or max_delay_s < 0:
            raise ValueError("max_batch and max_items must be >= 1, max_delay_s >= 0")
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_items = max_items
        self._clock = clock
        self._queues: dict[str, deque[tuple[float, T, int]]] = {}
        self._weights: dict[str, int] = {}  # queued work units per model
        self._count = 0
        self._flush_now = False
        self._closed = False
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return self._count

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, model: str, item: T, timeout: float | None = None, weight: int = 1) -> bool:
        """Queue ``item`` for ``model``. Waits up to ``timeout`` while full (None: forever,
        0: not at all); returns False when it could not be queued or the batcher is closed.

        ``weight`` is the item's share of ``max_batch`` (a tiled frame: its number of tiles): a
        batch is full at ``max_batch`` units, and holds at least one item however heavy."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._count < self.max_items or self._closed, timeout):
                return False
            if self._closed:
                return False
            self._queues.setdefault(model, deque()).append((self._clock(), item, max(1, int(weight))))
            self._weights[model] = self._weights.get(model, 0) + max(1, int(weight))
            self._count += 1
            self._cond.notify_all()
            return True

    def flush_now(self, on: bool = True) -> None:
        """While on, batches are handed out without waiting for ``max_delay`` (drain mode)."""
        with self._cond:
            self._flush_now = on
            self._cond.notify_all()

    def close(self) -> None:
        """Refuse new items and wake waiters; what is queued can still be taken (drained)."""
        with self._cond:
            self._closed = True
            self._flush_now = True
            self._cond.notify_all()

    def _ready(self, now: float) -> tuple[str | None, float | None]:
        """(model whose batch is due, or None; seconds until the next one is due)."""
        best: str | None = None
        best_t = float("inf")
        next_due: float | None = None
        for model, q in self._queues.items():
            if not q:
                continue
            first = q[0][0]
            due = first + self.max_delay_s
            if self._weights.get(model, 0) >= self.max_batch or now >= due or self._flush_now:
                if first < best_t:
                    best, best_t = model, first
            else:
                wait = due - now
                next_due = wait if next_due is None else min(next_due, wait)
        return best, next_due

    def get(self, timeout: float | None = None) -> Batch[T] | None:
        """The next due batch (oldest first item first), waiting up to ``timeout`` seconds."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                now = self._clock()
                model, next_due = self._ready(now)
                if model is not None:
                    q = self._queues[model]
                    first = q[0][0]
                    items, weight = [], 0
                    while q and (not items or weight + q[0][2] <= self.max_batch):
                        _, item, w = q.popleft()
                        items.append(item)
                        weight += w
                    self._weights[model] -= weight
                    if not q:
                        del self._queues[model]
                        del self._weights[model]
                    self._count -= len(items)
                    self._cond.notify_all()
                    return Batch(model, items, now - first, weight >= self.max_batch, weight)
                if self._closed and self._count == 0:
                    return None
                wait = next_due
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def drop(self, keep: Callable[[T], bool]) -> list[T]:
        """Remove and return the queued items for which ``keep`` is False (e.g. revoked partitions)."""
        dropped: list[T] = []
        with self._cond:
            for model in list(self._queues):
                q = self._queues[model]
                kept: deque[tuple[float, T, int]] = deque()
                for entry in q:
                    if keep(entry[1]):
                        kept.append(entry)
                    else:
                        dropped.append(entry[1])
                        self._weights[model] -= entry[2]
                self._queues[model] = kept
                if not kept:
                    del self._queues[model]
                    del self._weights[model]
            self._count -= len(dropped)
            self._cond.notify_all()
        return dropped
