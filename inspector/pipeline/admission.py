"""The checks a record passes before it is decoded: size, the ``model`` header, a served model.

Cheap and in this order, so that a record that cannot be routed never costs a decode.
"""

from __future__ import annotations

from collections.abc import Callable

from inspector.contracts.reasons import RejectReason
from inspector.contracts.wire import FrameHeaders
from inspector.pipeline.rejection import MAX_DETAIL, Rejection


def admission(size: int, max_frame_bytes: int, headers: FrameHeaders, model: str | None,
              served: Callable[[str], bool]) -> Rejection | None:
    """The rejection of a record of ``size`` bytes routed to ``model``, or None to decode it."""
    if size == 0:
        return Rejection(RejectReason.EMPTY, "the record has no value")
    if size > max_frame_bytes:
        return Rejection(RejectReason.TOO_LARGE_BYTES, f"{size} bytes > limit {max_frame_bytes}")
    if headers.model_header_bad:
        return Rejection(RejectReason.BAD_HEADER, "; ".join(headers.problems)[:MAX_DETAIL])
    if model is None or not served(model):
        return Rejection(RejectReason.UNKNOWN_MODEL, f"no model {model!r} is served here")
    return None
