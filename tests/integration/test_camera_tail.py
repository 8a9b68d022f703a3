"""`python -m devtools publish` (camera simulator) and `tail` (verdict printer) on a real broker."""

from __future__ import annotations

import argparse
import io
import json
import time
import uuid

import cv2
import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from devtools import camera, tail
from inspector.contracts.wire import (
    CAMERA_ID_HEADER,
    CAPTURED_AT_HEADER,
    CONTENT_TYPE_HEADER,
    FRAME_ID_HEADER,
    LINE_ID_HEADER,
    MODEL_HEADER,
)


@pytest.fixture
def image_dir(tmp_path):
    """Small real PNG/JPEG files in nested folders, plus a file that is not an image."""
    root = tmp_path / "images"
    (root / "b").mkdir(parents=True)
    (root / "a").mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(root / "b" / "2.png"), rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    cv2.imwrite(str(root / "a" / "1.png"), rng.integers(0, 255, (16, 16), dtype=np.uint8))
    cv2.imwrite(str(root / "a" / "0.jpg"), rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    cv2.imwrite(str(root / "c.PNG"), rng.integers(0, 65535, (8, 8), dtype=np.uint16))
    (root / "notes.txt").write_text("not an image")
    return root


def _consume(bootstrap: str, topic: str, expected: int, timeout: float = 15.0) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + timeout
        parts: set = set()
        while not parts and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list = []
        while len(out) < expected and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=300).values():
                out.extend(recs)
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def _args(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------
# camera


def test_find_images_recursive_sorted_and_content_types(image_dir):
    found = camera.find_images(image_dir)
    assert [p.relative_to(image_dir).as_posix() for p in found] == ["a/0.jpg", "a/1.png", "b/2.png", "c.PNG"]
    assert [camera.content_type_for(p) for p in found] == ["image/jpeg", "image/png", "image/png", "image/png"]
    assert camera.find_images(image_dir / "a" / "1.png") == [image_dir / "a" / "1.png"]
    with pytest.raises(FileNotFoundError):
        camera.find_images(image_dir / "missing")
    empty = image_dir.parent / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError):
        camera.find_images(empty)


def test_publish_frames_keys_headers_values(kafka_bootstrap, unique_topic, image_dir):
    topic = unique_topic("frames", partitions=2)
    paths = camera.find_images(image_dir)
    producer = camera.make_producer(kafka_bootstrap)
    before = int(time.time() * 1000)
    try:
        ids = camera.publish_frames(
            producer, topic, camera.iter_frames(paths, count=6), rate=0, camera_id="cam-7",
            line_id="line-2", model="rd-parts", frame_id_style="seq",
        )
    finally:
        producer.close(timeout=5)
    after = int(time.time() * 1000)
    assert ids == [f"cam-7-{i}" for i in range(6)]

    records = _consume(kafka_bootstrap, topic, 6)
    assert len(records) == 6
    assert len({r.partition for r in records}) == 1  # one key -> one partition -> camera order
    expected_files = [paths[i % len(paths)] for i in range(6)]  # loops over the folder
    for i, (rec, path) in enumerate(zip(records, expected_files)):
        h = dict(rec.headers)
        assert rec.key == b"cam-7"
        assert rec.value == path.read_bytes()
        assert h[FRAME_ID_HEADER] == f"cam-7-{i}".encode()
        assert h[CAMERA_ID_HEADER] == b"cam-7" and h[LINE_ID_HEADER] == b"line-2" and h[MODEL_HEADER] == b"rd-parts"
        assert h[CONTENT_TYPE_HEADER] == camera.content_type_for(path).encode()
        assert before <= int(h[CAPTURED_AT_HEADER]) <= after
        assert cv2.imdecode(np.frombuffer(rec.value, np.uint8), cv2.IMREAD_UNCHANGED) is not None


def test_publish_uuid_ids_no_model_header_and_rate(kafka_bootstrap, unique_topic, image_dir):
    topic = unique_topic("frames", partitions=1)
    paths = camera.find_images(image_dir)
    producer = camera.make_producer(kafka_bootstrap)
    started = time.monotonic()
    try:
        ids = camera.publish_frames(producer, topic, camera.iter_frames(paths, count=5), rate=25,
                                    camera_id="cam-u", line_id="l")
    finally:
        producer.close(timeout=5)
    elapsed = time.monotonic() - started
    assert elapsed >= 4 / 25 * 0.9  # 5 frames at 25/s: 4 intervals
    assert len(set(ids)) == 5 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    records = _consume(kafka_bootstrap, topic, 5)
    assert [dict(r.headers)[FRAME_ID_HEADER].decode() for r in records] == ids
    assert all(MODEL_HEADER not in dict(r.headers) for r in records)


def test_publish_cli_prints_json_summary(kafka_bootstrap, unique_topic, image_dir, capsys):
    topic = unique_topic("frames", partitions=None)  # auto-created on first produce
    args = _args(camera, ["publish", str(image_dir), "--bootstrap", kafka_bootstrap, "--topic", topic,
                          "--count", "7", "--rate", "0", "--camera-id", "cam-cli", "--frame-ids", "seq"])
    assert args.func(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    assert summary["sent"] == 7 and summary["ok"] is True and summary["seconds"] >= 0
    assert summary["bytes"] > 0 and summary["rate"] > 0
    records = _consume(kafka_bootstrap, topic, 7)
    assert [r.key for r in records] == [b"cam-cli"] * 7


def test_publish_cli_missing_path_exit_2(tmp_path, capsys):
    args = _args(camera, ["publish", str(tmp_path / "nothing"), "--bootstrap", "127.0.0.1:1"])
    assert args.func(args) == 2
    assert "no such file" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# tail


def _verdict(i: int, verdict: str = "ok") -> dict:
    return {
        "wire_version": 1, "frame_id": f"f{i}", "camera_id": f"cam-{i % 2}", "line_id": "line-1",
        "model": "rd-parts", "model_version": "3", "verdict": verdict, "score": 0.1 + i / 100,
        "threshold": 0.5,
        "regions": [{"x0": 1, "y0": 2, "x1": 10, "y1": 12, "area": 50, "peak": 0.9}] if verdict == "defect" else [],
    }


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """All values in one record batch where they fit (a long linger, one flush)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1000)
    try:
        for v in values:
            producer.send(topic, key=b"k", value=v)
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)


def test_tail_json_from_beginning_skips_garbage(kafka_bootstrap, unique_topic, capsys):
    topic = unique_topic("verdicts", partitions=1)
    verdicts = [_verdict(0), _verdict(1, "defect"), _verdict(2)]
    _produce(kafka_bootstrap, topic, [json.dumps(verdicts[0]).encode(), b"\xff not json",
                                      json.dumps(verdicts[1]).encode(), b"[1, 2]",
                                      json.dumps(verdicts[2]).encode()])
    out = io.StringIO()
    args = _args(tail, ["tail", "--bootstrap", kafka_bootstrap, "--topic", topic, "--from-beginning",
                        "--json", "--count", "3", "--timeout", "15"])
    assert tail.run(args, out=out) == 0
    assert [json.loads(line) for line in out.getvalue().splitlines()] == verdicts
    err = capsys.readouterr().err
    assert "not JSON" in err and "not a JSON object" in err


def test_tail_from_latest_prints_only_new_compact_lines(kafka_bootstrap, unique_topic):
    topic = unique_topic("verdicts", partitions=2)
    # The old records share one batch: the tail must start after all of them, not inside it.
    _produce(kafka_bootstrap, topic, [json.dumps(_verdict(i)).encode() for i in range(3)])
    with tail.VerdictTail(kafka_bootstrap, topic) as reader:
        assert reader.assigned
        new = [_verdict(10, "defect"), _verdict(11)]
        _produce(kafka_bootstrap, topic, [json.dumps(v).encode() for v in new])
        got = list(reader.iter(count=2, timeout=15))
    assert [g.verdict for g in got] == new
    line = tail.format_verdict(got[0].verdict, got[0].record.timestamp)
    for part in ("cam-0", "frame=f10", "DEFECT", "score=0.2000", "thr=0.5000", "model=rd-parts@3",
                 "regions=1", "[1,2,10,12]"):
        assert part in line, line
    assert "OK" in tail.format_verdict(got[1].verdict)


def test_tail_picks_up_topic_created_later(kafka_bootstrap, unique_topic):
    topic = unique_topic("verdicts", partitions=None)  # does not exist yet
    with tail.VerdictTail(kafka_bootstrap, topic) as reader:
        assert not reader.assigned
        assert reader.poll(0.2) == []
        _produce(kafka_bootstrap, topic, [json.dumps(_verdict(5)).encode()])
        got = list(reader.iter(count=1, timeout=15))
    assert [g.verdict["frame_id"] for g in got] == ["f5"]


def test_tail_count_not_reached_exits_1(kafka_bootstrap, unique_topic, capsys):
    topic = unique_topic("verdicts", partitions=1)
    args = _args(tail, ["tail", "--bootstrap", kafka_bootstrap, "--topic", topic, "--count", "1",
                        "--timeout", "1.5"])
    started = time.monotonic()
    assert tail.run(args, out=io.StringIO()) == 1
    assert time.monotonic() - started < 10
    assert "0 of 1" in capsys.readouterr().err


def test_format_verdict_tolerates_missing_fields():
    assert tail.format_verdict({}) == "? frame=? ?"
    line = tail.format_verdict({"frame_id": "x", "camera_id": "c", "verdict": "rejected",
                                "reason": "decode_failed", "score": None, "regions": []})
    assert "REJECTED" in line and "reason=decode_failed" in line and "regions=0" in line
    assert tail.parse_verdict(b'{"a": 1}') == ({"a": 1}, None)
    assert tail.parse_verdict(None)[0] is None
    unique = uuid.uuid4().hex
    assert tail.parse_verdict(json.dumps({"frame_id": unique}).encode())[0]["frame_id"] == unique
