"""The pure steps of a batch's way out (inspector.pipeline.verdicts): no broker, no engine run."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from inspector.contracts.reasons import RejectReason
from inspector.contracts.wire import DeadLetter, FrameHeaders, Region, Source, Verdict, heatmap_key
from inspector.engine.engine import Inspection
from inspector.pipeline.frame import Frame
from inspector.pipeline.offsets import OffsetTracker, Ticket
from inspector.pipeline.rejection import MAX_DETAIL, Rejection
from inspector.pipeline.verdicts import dead_letter, inspected_verdict, rejected_verdict, split_stale


@dataclass(frozen=True)
class Served:
    name: str = "bottle"
    version: str = "v3"
    threshold: float = 1.25


def frame(offset: int = 7, ticket: Ticket | None = None, **headers: object) -> Frame:
    h = FrameHeaders(frame_id=f"f-{offset}", camera_id="cam-1", line_id="line-A", captured_at=1_763_700_000_000,
                     **headers)
    return Frame(ticket=ticket or Ticket("p0", offset, 1), topic="frames", partition=2, offset=offset, key=b"cam-1",
                 value=b"bytes", raw_headers=None, headers=h, model="bottle", received_ms=1_763_700_000_100.0,
                 received_mono=5.0, size=5)


def inspection(score: float = 2.0, defect: bool = True, regions: list[Region] | None = None) -> Inspection:
    return Inspection(score=np.float32(score), defect=defect, regions=regions or [], mask=np.eye(4, dtype=bool),
                      heatmap=np.zeros((4, 4), np.float32))


# ---------------------------------------------------------------------------------------------
# stale tickets
# ---------------------------------------------------------------------------------------------


def test_split_stale_keeps_batch_order_and_drops_revoked_generations():
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.assign(["p0", "p1"])
    a = frame(1, tracker.track("p0", 1))
    b = frame(2, tracker.track("p1", 2))
    c = frame(3, tracker.track("p0", 3))
    tracker.revoke(["p1"])
    tracker.assign(["p1"])  # assigned again: a new generation, b's ticket is stale
    d = frame(4, tracker.track("p1", 4))
    current, stale = split_stale([a, b, c, d], tracker.is_current)
    assert current == [a, c, d] and stale == [b]


def test_split_stale_of_nothing_current():
    frames = [frame(1), frame(2)]
    assert split_stale(frames, lambda _t: False) == ([], frames)
    assert split_stale([], lambda _t: True) == ([], [])


# ---------------------------------------------------------------------------------------------
# inspection -> verdict
# ---------------------------------------------------------------------------------------------


def test_inspected_verdict_says_what_the_engine_found():
    big = Region(x0=1, y0=2, x1=9, y1=12, area=60, peak=3.5)
    small = Region(x0=20, y0=20, x1=21, y1=21, area=1, peak=9.0)
    f = frame(9)
    v = inspected_verdict(f, inspection(2.0, True, [small, big]), Served(), worker_id="w1", region_min_area=4,
                          heatmap_key=heatmap_key("f-9"), inferred_at=10.0, published_at=11.0)
    assert (v.verdict, v.score, v.threshold, v.model, v.model_version) == ("defect", 2.0, 1.25, "bottle", "v3")
    assert type(v.score) is float and v.reason is None and v.detail is None
    assert v.regions == [big]  # below region_min_area: left out
    assert np.array_equal(v.mask.decode(), np.eye(4, dtype=bool))
    assert v.heatmap_key == "inspector:heatmap:f-9"
    assert (v.frame_id, v.camera_id, v.line_id, v.worker_id) == ("f-9", "cam-1", "line-A", "w1")
    assert v.source == Source(topic="frames", partition=2, offset=9)
    t = v.timings
    assert (t.captured_at, t.received_at, t.inferred_at, t.published_at) == (1_763_700_000_000, f.received_ms, 10.0, 11.0)
    assert Verdict.from_bytes(v.to_bytes()) == v


def test_inspected_verdict_ok_without_heatmap():
    v = inspected_verdict(frame(), inspection(0.5, False), Served(), worker_id="w1", region_min_area=1,
                          heatmap_key=None, inferred_at=1.0, published_at=2.0)
    assert v.verdict == "ok" and v.regions == [] and v.heatmap_key is None


# ---------------------------------------------------------------------------------------------
# rejections
# ---------------------------------------------------------------------------------------------


def test_rejected_verdict_and_its_dead_letter_carry_the_reason_code():
    f = frame(5)
    r = Rejection(RejectReason.UNDECODABLE, "truncated JPEG")
    v = rejected_verdict(f, r, "v3", worker_id="w1", published_at=42.0)
    assert (v.verdict, v.reason, v.detail, v.model, v.model_version) == ("rejected", "undecodable", "truncated JPEG",
                                                                          "bottle", "v3")
    assert v.reason is RejectReason.UNDECODABLE and v.score is None and v.mask is None and v.regions == []
    assert v.timings.inferred_at is None and v.timings.published_at == 42.0
    assert v.source == Source(topic="frames", partition=2, offset=5)
    assert json.loads(v.to_bytes())["reason"] == "undecodable"

    dl = dead_letter(f, r, worker_id="w1", failed_at=42.0)
    assert (dl.reason, dl.detail, dl.frame_id, dl.source_topic, dl.source_partition, dl.source_offset) == (
        "undecodable", "truncated JPEG", "f-5", "frames", 2, 5)
    headers = dl.to_kafka(None)
    assert ("dlq-reason", b"undecodable") in headers
    assert DeadLetter.from_kafka(headers).reason is RejectReason.UNDECODABLE


def test_rejection_of_an_error_names_it_and_is_bounded():
    r = Rejection.of_error(RejectReason.INFERENCE_ERROR, RuntimeError("CUDA out of memory" + "!" * 1000))
    assert r.reason is RejectReason.INFERENCE_ERROR
    assert r.detail.startswith("RuntimeError: CUDA out of memory") and len(r.detail) == MAX_DETAIL
    reason, detail = r  # still a (reason, detail) pair
    assert reason == "inference_error"


# ---------------------------------------------------------------------------------------------
# one Region type
# ---------------------------------------------------------------------------------------------


def test_the_engine_finds_wire_regions():
    from inspector.engine import engine, regions

    heat = np.zeros((8, 8), np.float32)
    heat[2:4, 3:6] = 2.0
    found = regions.find_regions(heat, 1.0, (16, 16))
    assert engine.Region is Region and len(found) == 1 and type(found[0]) is Region
    assert found[0] == Region(x0=6, y0=4, x1=12, y1=8, area=24, peak=2.0)
    assert hash(found[0]) == hash(Region(x0=6, y0=4, x1=12, y1=8, area=24, peak=2.0))  # frozen, as before
