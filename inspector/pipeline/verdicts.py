"""Pure steps of a batch's way out: which frames are still ours, and what each one's verdict says.

No I/O, no clock and no Kafka: the worker passes in the times and the tracker's answer, so these
are unit-tested without a broker (tests/unit/test_verdicts.py).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Protocol, TypeVar

from inspector.contracts.wire import DeadLetter, Mask, Timings, Verdict
from inspector.pipeline.frame import Frame
from inspector.pipeline.offsets import Ticket
from inspector.pipeline.rejection import Rejection

if TYPE_CHECKING:
    from inspector.engine.engine import Inspection

P = TypeVar("P", bound=Hashable)


class ServedModel(Protocol):
    """What a verdict names of the model that inspected the frame (an ``Engine`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def threshold(self) -> float: ...


def split_stale(frames: Iterable[Frame[P]], is_current: Callable[[Ticket[P]], bool],
                ) -> tuple[list[Frame[P]], list[Frame[P]]]:
    """``(current, stale)`` in batch order. A stale frame's partition was revoked (or revoked and
    assigned again) since it was polled: its verdict is the new owner's to give."""
    current: list[Frame[P]] = []
    stale: list[Frame[P]] = []
    for frame in frames:
        (current if is_current(frame.ticket) else stale).append(frame)
    return current, stale


def inspected_verdict(frame: Frame[P], inspection: Inspection, model: ServedModel, *, worker_id: str,
                      region_min_area: int, heatmap_key: str | None, inferred_at: float,
                      published_at: float) -> Verdict:
    """The ``ok``/``defect`` verdict of an inspected frame. Regions smaller than
    ``region_min_area`` (original pixels) are left out; times are epoch milliseconds."""
    headers = frame.headers
    return Verdict(
        frame_id=headers.frame_id,
        camera_id=headers.camera_id,
        line_id=headers.line_id,
        model=model.name,
        model_version=model.version,
        verdict="defect" if inspection.defect else "ok",
        score=float(inspection.score),
        threshold=float(model.threshold),
        regions=[r for r in inspection.regions if r.area >= region_min_area],
        mask=Mask.encode(inspection.mask),  # sized by the engine (rollout passes mask_size)
        heatmap_key=heatmap_key,
        source=frame.source,
        worker_id=worker_id,
        timings=Timings(captured_at=headers.captured_at, received_at=frame.received_ms,
                        inferred_at=inferred_at, published_at=published_at),
    )


def rejected_verdict(frame: Frame[P], rejection: Rejection, model_version: str | None, *, worker_id: str,
                     published_at: float) -> Verdict:
    """The ``rejected`` verdict of a frame that got no score; ``model_version`` is the served
    version of the frame's model, if any."""
    headers = frame.headers
    return Verdict(
        frame_id=headers.frame_id,
        camera_id=headers.camera_id,
        line_id=headers.line_id,
        model=frame.model,
        model_version=model_version,
        verdict="rejected",
        reason=rejection.reason,
        detail=rejection.detail,
        source=frame.source,
        worker_id=worker_id,
        timings=Timings(captured_at=headers.captured_at, received_at=frame.received_ms, published_at=published_at),
    )


def dead_letter(frame: Frame[P], rejection: Rejection, *, worker_id: str, failed_at: float) -> DeadLetter:
    """The ``dlq-`` headers that go with a rejected frame's original bytes."""
    return DeadLetter(
        reason=rejection.reason, detail=rejection.detail, frame_id=frame.headers.frame_id,
        source_topic=frame.topic, source_partition=frame.partition, source_offset=frame.offset,
        worker_id=worker_id, failed_at=failed_at,
    )
