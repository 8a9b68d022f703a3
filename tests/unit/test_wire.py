"""Wire contract: header parsing never raises, verdicts round-trip, schemas export."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from inspector.contracts.reasons import RejectReason
from inspector.contracts.wire import (
    DeadLetter,
    FrameHeaders,
    Mask,
    ModelUpdate,
    Region,
    Source,
    Timings,
    Verdict,
    export_schemas,
    heatmap_key,
)


def parse(headers, key=b"cam-7", offset=42):
    return FrameHeaders.from_kafka(headers, key, "frames", 3, offset)


def test_all_headers_parsed():
    h = parse(
        [
            ("frame-id", b"f-1"),
            ("camera-id", b"cam-1"),
            ("line-id", b"line-A"),
            ("model", b"bottle"),
            ("captured-at", b"1763700000123"),
            ("content-type", b"image/jpeg"),
        ]
    )
    assert (h.frame_id, h.camera_id, h.line_id, h.model) == ("f-1", "cam-1", "line-A", "bottle")
    assert h.captured_at == 1763700000123 and h.content_type == "image/jpeg"
    assert not h.frame_id_derived and h.problems == []
    assert parse(h.to_kafka()) == h


def test_missing_headers_derive_frame_id_and_camera_from_key():
    h = parse(None, key=b"cam-9", offset=17)
    assert h.frame_id == "frames:3:17" and h.frame_id_derived
    assert h.camera_id == "cam-9"
    assert h.model is None and h.captured_at is None
    assert parse([], key=None).camera_id == "unknown"


@pytest.mark.parametrize(
    "headers, problem",
    [
        ([("model", b"\xff\xfe\x00")], "model"),
        ([("model", b"m" * 100_000)], "model"),
        ([("model", b"bad\nname")], "model"),
        ([("captured-at", b"yesterday")], "captured-at"),
        ([("captured-at", b"nan")], "captured-at"),
        ([("captured-at", b"1e300")], "captured-at"),
        ([("frame-id", b"\x00" * 10)], "frame-id"),
    ],
)
def test_garbage_headers_are_dropped_with_a_problem(headers, problem):
    h = parse(headers)
    assert any(p.startswith(problem + ":") for p in h.problems)
    assert h.model_header_bad == (problem == "model")
    assert h.frame_id  # always routable and identifiable


def test_headers_of_wrong_types_and_too_many_never_raise():
    junk = [(None, b"x"), (1, 2), ("model", 123), ("camera-id", None), "notatuple", (b"line-id", b"L")]
    junk += [(f"x-{i}", b"v") for i in range(1000)]
    h = parse(junk)
    assert h.line_id == "L"
    assert any("not bytes" in p for p in h.problems)
    assert any("headers:" in p for p in h.problems)
    assert parse(object()).problems == ["headers: unreadable"]


def test_header_names_case_insensitive_first_wins():
    h = parse([("Model", b"a"), ("model", b"b")])
    assert h.model == "a"


def _verdict(**kw):
    base = dict(
        frame_id="f-1",
        camera_id="cam-1",
        model="bottle",
        model_version="v3",
        verdict="defect",
        score=1.5,
        threshold=1.0,
        regions=[Region(x0=1, y0=2, x1=5, y1=9, area=20, peak=2.0)],
        mask=Mask.encode(np.eye(5, dtype=bool)),
        heatmap_key=heatmap_key("f-1"),
        source=Source(topic="frames", partition=0, offset=9),
        worker_id="w1",
        timings=Timings(captured_at=1, received_at=2.0, inferred_at=3.0, published_at=4.0),
    )
    base.update(kw)
    return Verdict(**base)


def test_verdict_roundtrip_and_mask_bits():
    v = _verdict()
    back = Verdict.from_bytes(v.to_bytes())
    assert back == v
    assert np.array_equal(back.mask.decode(), np.eye(5, dtype=bool))
    assert json.loads(v.to_bytes())["heatmap_key"] == "inspector:heatmap:f-1"


def test_mask_roundtrip_non_multiple_of_8():
    rng = np.random.default_rng(0)
    m = rng.random((13, 7)) > 0.5
    enc = Mask.encode(m)
    assert len(enc.data) <= 4 * ((13 * 7 + 7) // 8 + 2) // 3 + 4
    assert np.array_equal(enc.decode(), m)
    with pytest.raises(ValueError):
        Mask.encode(np.zeros((0, 3)))


def test_verdict_rejects_unknown_kind_and_extra_fields():
    with pytest.raises(ValidationError):
        _verdict(verdict="maybe")
    with pytest.raises(ValidationError):
        Verdict.model_validate({**json.loads(_verdict().to_bytes()), "surprise": 1})


def test_dead_letter_headers_keep_originals():
    dl = DeadLetter(
        reason="undecodable", detail="x" * 5000, frame_id="f", source_topic="frames",
        source_partition=1, source_offset=2, worker_id="w", failed_at=3.0,
    )
    headers = dl.to_kafka([("camera-id", b"cam"), ("dlq-reason", b"spoofed")])
    assert ("camera-id", b"cam") in headers
    assert [v for k, v in headers if k == "dlq-reason"] == [b"undecodable"]
    assert all(len(v) <= 1024 for _, v in headers)
    back = DeadLetter.from_kafka(headers)
    assert back.source_offset == 2 and back.reason == "undecodable"


def test_model_update_validation():
    ok = ModelUpdate(name="bottle", version="v2", checkpoint="/m/bottle/v2", manifest_sha256="a" * 64)
    assert ModelUpdate.from_bytes(ok.to_bytes()) == ok
    with pytest.raises(ValidationError):
        ModelUpdate(name="bottle", version="v2", checkpoint="/m", manifest_sha256="nothex")
    with pytest.raises(ValidationError):
        ModelUpdate.from_bytes(b"{not json")


def test_export_schemas(tmp_path):
    paths = export_schemas(tmp_path)
    names = sorted(p.name for p in paths)
    assert names == [
        "dead-letter.schema.json", "frame-headers.schema.json",
        "model-update.schema.json", "verdict.schema.json",
    ]
    schema = json.loads((tmp_path / "verdict.schema.json").read_text())
    assert schema["properties"]["verdict"]["enum"] == ["ok", "defect", "rejected"]
    assert "source" in schema["required"]


def test_schemas_list_the_reject_reasons(tmp_path):
    export_schemas(tmp_path)
    codes = [r.value for r in RejectReason]
    verdict = json.loads((tmp_path / "verdict.schema.json").read_text())
    assert verdict["$defs"]["RejectReason"]["enum"] == codes
    assert {"$ref": "#/$defs/RejectReason"} in verdict["properties"]["reason"]["anyOf"]
    letter = json.loads((tmp_path / "dead-letter.schema.json").read_text())
    assert letter["$defs"]["RejectReason"]["enum"] == codes
    assert letter["properties"]["reason"]["$ref"] == "#/$defs/RejectReason"


def test_reasons_are_codes_of_the_enumeration():
    v = _verdict(verdict="rejected", reason="too_small", detail="3x3")
    assert v.reason is RejectReason.TOO_SMALL
    assert json.loads(v.to_bytes())["reason"] == "too_small"
    with pytest.raises(ValidationError):
        _verdict(verdict="rejected", reason="because")
    headers = DeadLetter(reason=RejectReason.EMPTY, frame_id="f", source_topic="frames", source_partition=0,
                         source_offset=1, worker_id="w", failed_at=1.0).to_kafka()
    assert ("dlq-reason", b"empty") in headers
    with pytest.raises(ValidationError):
        DeadLetter.from_kafka([(k, b"because" if k == "dlq-reason" else v) for k, v in headers])


def test_regions_are_immutable():
    r = Region(x0=1, y0=2, x1=5, y1=9, area=20, peak=2.0)
    with pytest.raises(ValidationError):
        r.x0 = 3
    assert {r, Region(x0=1, y0=2, x1=5, y1=9, area=20, peak=2.0)} == {r}
