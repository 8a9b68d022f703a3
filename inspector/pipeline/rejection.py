"""Why a frame is turned away: a reason code of the wire contract plus a detail for people."""

from __future__ import annotations

from typing import NamedTuple

from inspector.contracts.reasons import RejectReason

#: Longest detail carried on a verdict or a dead-letter header.
MAX_DETAIL = 500


class Rejection(NamedTuple):
    """``(reason, detail)``: the reason is what consumers match, the detail says what happened."""

    reason: RejectReason
    detail: str

    @classmethod
    def of_error(cls, reason: RejectReason, exc: BaseException) -> Rejection:
        """A rejection for an exception, named by its type and message."""
        return cls(reason, f"{type(exc).__name__}: {exc}"[:MAX_DETAIL])
