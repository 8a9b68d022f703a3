"""Admission (inspector.pipeline.admission): what turns a record away before it is decoded."""

from __future__ import annotations

import pytest

from inspector.contracts.reasons import RejectReason
from inspector.contracts.wire import FrameHeaders
from inspector.pipeline.admission import admission
from inspector.pipeline.rejection import MAX_DETAIL, Rejection

GOOD = FrameHeaders.from_kafka([("model", b"parts")], b"cam", "frames", 0, 1)
BAD_MODEL = FrameHeaders.from_kafka([("model", b"\xff\xfe")], b"cam", "frames", 0, 1)


def served(name: str) -> bool:
    return name == "parts"


def test_a_good_record_is_admitted():
    assert admission(100, 1000, GOOD, "parts", served) is None
    assert admission(1000, 1000, GOOD, "parts", served) is None  # the limit itself is allowed


@pytest.mark.parametrize(
    ("size", "headers", "model", "reason"),
    [
        (0, GOOD, "parts", RejectReason.EMPTY),
        (0, BAD_MODEL, None, RejectReason.EMPTY),  # cheapest check first
        (1001, GOOD, "parts", RejectReason.TOO_LARGE_BYTES),
        (1001, BAD_MODEL, None, RejectReason.TOO_LARGE_BYTES),
        (100, BAD_MODEL, None, RejectReason.BAD_HEADER),
        (100, BAD_MODEL, "parts", RejectReason.BAD_HEADER),  # a default model does not excuse a bad header
        (100, GOOD, "other", RejectReason.UNKNOWN_MODEL),
        (100, GOOD, None, RejectReason.UNKNOWN_MODEL),  # no header and no default model
    ],
)
def test_reasons_in_order_of_cost(size, headers, model, reason):
    rejection = admission(size, 1000, headers, model, served)
    assert isinstance(rejection, Rejection) and rejection.reason is reason and rejection.detail


def test_details_say_what_and_stay_bounded():
    assert admission(1001, 1000, GOOD, "parts", served).detail == "1001 bytes > limit 1000"
    assert admission(100, 1000, GOOD, "other", served).detail == "no model 'other' is served here"
    many = FrameHeaders(frame_id="f", camera_id="c", problems=["model: not UTF-8"] + ["x" * 300] * 5)
    assert len(admission(100, 1000, many, None, served).detail) == MAX_DETAIL


def test_the_served_check_is_asked_only_when_needed():
    asked: list[str] = []

    def ask(name: str) -> bool:
        asked.append(name)
        return True

    admission(0, 1000, GOOD, "parts", ask)
    admission(100, 1000, BAD_MODEL, "parts", ask)
    assert asked == []
    assert admission(100, 1000, GOOD, "parts", ask) is None and asked == ["parts"]
