"""`inspector serve` as a subprocess against a real Apache Kafka broker and a real Redis.

Each test gets its own topics and consumer group, so tests share one broker without seeing each
other. Frames are small (64 px JPEG) and the checkpoint is the tiny real one from conftest.
The harness (worker subprocess, topics, producer, reader) lives in ``harness.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import Counter, defaultdict

import cv2
import numpy as np
import pytest

kafka = pytest.importorskip("kafka")
redis = pytest.importorskip("redis")

from kafka import KafkaProducer  # noqa: E402

import torch  # noqa: E402

from inspector.contracts.control import publish_update  # noqa: E402
from inspector.engine.backends.plan import resolve_plan  # noqa: E402
from inspector.engine.options import EngineOptions  # noqa: E402
from inspector.model.checkpoint import read_manifest  # noqa: E402
from inspector.model.repository import update_for_checkpoint  # noqa: E402
from inspector.contracts.wire import DeadLetter, Verdict  # noqa: E402
from tests.integration.harness import (  # noqa: E402
    committed_offsets,
    have_frames,
    jpeg,
    kcat,
    manifest_name,
    manifest_version,
    send_frame,
    verdicts_of,
)

# backstop only: every wait inside a test has its own deadline; the first test also pays for
# training the session-scoped tiny checkpoint
pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


def test_frames_get_verdicts_in_camera_order(workers, names, producer, reader, tiny_checkpoint, redis_url,
                                             kafka_bootstrap):
    """N frames from 3 cameras → N verdicts with every field right, per-camera order kept,
    heatmaps and latest-frame lists in Redis; SIGTERM → exit 0 with everything committed."""
    w = workers("w1")
    n, cameras = 30, [f"cam-{c}-{names.tag}" for c in "abc"]
    version, model = manifest_version(tiny_checkpoint), manifest_name(tiny_checkpoint)
    sent: dict[str, list[str]] = defaultdict(list)
    for i in range(n):
        cam = cameras[i % 3]
        fid = f"{cam}-{i:03d}"
        send_frame(producer, names.frames, jpeg(i), camera=cam, frame_id=fid)
        sent[cam].append(fid)
    send_frame(producer, names.frames, jpeg(99), camera=cameras[0], frame_id=None)  # frame id derived
    w.wait_ready()
    # no trusted keys configured: serving, and saying where an operator looks first that updates are unchecked
    code, body = w.get("/readyz")
    assert code == 200 and "not signature-checked" in body and w.metric("inspector_model_trusted_keys") == 0
    recs = reader(names.verdicts).read(lambda r: len(r) >= n + 1, 90, "verdicts")
    assert len(recs) == n + 1
    vs = verdicts_of(recs)
    by_id = {v.frame_id: v for v in vs}
    assert len(by_id) == n + 1  # no duplicates in a clean run

    for r, v in zip(recs, vs):
        assert r.key == v.camera_id.encode()
        assert v.verdict in ("ok", "defect") and v.model == model and v.model_version == version
        assert v.score is not None and v.threshold is not None
        assert (v.verdict == "defect") == (v.score >= v.threshold)
        assert v.line_id == "line-1" and v.worker_id == "w1"
        assert v.source.topic == names.frames and v.mask is not None
        assert v.mask.decode().shape == (32, 32)
        assert v.heatmap_key == f"inspector:heatmap:{v.frame_id}"
        t = v.timings
        assert t.captured_at <= t.received_at <= t.inferred_at <= t.published_at
        for reg in v.regions:
            assert 0 <= reg.x0 < reg.x1 <= 64 and 0 <= reg.y0 < reg.y1 <= 64 and reg.area > 0
    # judged with the threshold calibrated for the precision this worker runs in (bf16 where the CPU
    # has it natively), and exported with both
    numerics = resolve_plan(torch.device("cpu"), EngineOptions()).numerics
    m = read_manifest(tiny_checkpoint)
    calibrated_in = numerics if numerics == "fp32" or numerics in m.precision_points else "fp32"
    point = m.operating_point(calibrated_in)
    assert all(v.threshold == pytest.approx(point.threshold) for v in vs)
    assert w.metric("inspector_model_threshold", model=model, version=version, numerics=numerics,
                    calibrated_in=calibrated_in) == pytest.approx(point.threshold)
    derived = [v for v in vs if v.frame_id.startswith(names.frames + ":")]
    assert len(derived) == 1
    s = derived[0].source
    assert derived[0].frame_id == f"{s.topic}:{s.partition}:{s.offset}"

    # per-camera order: a camera's verdicts appear in the order its frames were sent
    for cam, ids in sent.items():
        got = [v.frame_id for v in vs if v.camera_id == cam and v.frame_id in set(ids)]
        assert got == ids, cam

    # Redis: heatmap PNGs with a TTL, latest frame ids per camera (newest first)
    rc = redis.Redis.from_url(redis_url)
    last = sent[cameras[1]][-1]
    deadline = time.monotonic() + 10
    while rc.get(f"inspector:heatmap:{last}") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    png = rc.get(f"inspector:heatmap:{last}")
    assert png is not None and png.startswith(b"\x89PNG")
    assert 0 < rc.ttl(f"inspector:heatmap:{last}") <= 3600
    latest = [x.decode() for x in rc.lrange(f"inspector:camera:{cameras[1]}:latest", 0, -1)]
    assert latest == list(reversed(sent[cameras[1]]))

    assert w.metric("inspector_frames_total") == n + 1
    assert w.metric("inspector_batch_size_count") >= 1
    assert w.get("/healthz")[0] == 200
    assert w.stop() == 0
    # graceful stop committed every offset: the group's committed offsets reach the end
    committed = committed_offsets(kafka_bootstrap, names.group, names.frames)
    per_part = Counter(v.source.partition for v in vs)
    assert committed == dict(per_part)


def test_non_square_frames_get_regions_and_heatmaps_in_their_own_shape(workers, names, producer, reader,
                                                                       strip_checkpoint, redis_url):
    """A model of 64 x 160 strips serves strips of two sizes: regions lie inside each frame, the
    mask covers the frame, the Redis heatmap has the frame's aspect ratio."""
    w = workers("w1", INSPECTOR_CHECKPOINT=str(strip_checkpoint))
    cam = f"cam-strip-{names.tag}"
    sizes = {}
    for i in range(8):
        h, wd = (64, 160) if i % 2 == 0 else (128, 320)
        defect = ("scratch", "spot")[i % 4 // 2] if i >= 4 else None
        fid = f"{cam}-{i}"
        sizes[fid] = (h, wd)
        send_frame(producer, names.frames, jpeg(i, size=h, width=wd, defect=defect, seed=3), camera=cam, frame_id=fid)
    w.wait_ready()
    vs = verdicts_of(reader(names.verdicts).read(have_frames(set(sizes)), 90, "verdicts"))
    assert {v.frame_id for v in vs} == set(sizes)
    for v in vs:
        h, wd = sizes[v.frame_id]
        assert v.mask.decode().shape == (32, 32)
        for reg in v.regions:
            assert 0 <= reg.x0 < reg.x1 <= wd and 0 <= reg.y0 < reg.y1 <= h and reg.area > 0
    assert any(v.regions for v in vs)
    rc = redis.Redis.from_url(redis_url)
    fid = f"{cam}-1"
    deadline = time.monotonic() + 10
    while rc.get(f"inspector:heatmap:{fid}") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    png = rc.get(f"inspector:heatmap:{fid}")
    assert png is not None
    heat = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert heat.shape == (64, 160)  # the frame's aspect ratio at model resolution
    assert w.stop() == 0


def test_sigkill_and_restart_every_frame_gets_a_verdict(workers, names, producer, reader, kafka_bootstrap):
    """SIGKILL mid-stream, restart: every frame has a verdict; duplicates only at or after the
    committed offset; every frame before the committed offset was answered by the first worker."""
    n = 80
    w1 = workers("w1")
    w1.wait_ready()
    ids = [f"k-{i:03d}" for i in range(n)]
    verdict_reader = reader(names.verdicts)
    for i, fid in enumerate(ids[:40]):
        send_frame(producer, names.frames, jpeg(i), camera=f"cam-{i % 4}", frame_id=fid)
    verdict_reader.read(lambda r: len(r) >= 15, 60, "first verdicts")
    for i, fid in enumerate(ids[40:], start=40):  # keep the stream going, then kill mid-way
        send_frame(producer, names.frames, jpeg(i), camera=f"cam-{i % 4}", frame_id=fid)
        if i == 50:
            w1.kill()
    committed = committed_offsets(kafka_bootstrap, names.group, names.frames)
    before_restart = len(verdict_reader.records)
    assert before_restart < n, "the worker finished everything before the kill; nothing was tested"

    w2 = workers("w2")
    recs = verdict_reader.read(have_frames(set(ids)), 90, "all frames answered after restart")
    w2.stop()
    vs = verdicts_of(recs)
    counts = Counter(v.frame_id for v in vs)
    assert set(counts) == set(ids)
    first_run = {v.frame_id for v in vs if v.worker_id == "w1"}
    for v in vs:
        start = committed.get(v.source.partition, 0)
        if counts[v.frame_id] > 1:
            assert v.source.offset >= start, f"{v.frame_id} duplicated although committed"
        if v.source.offset < start:
            assert v.frame_id in first_run, f"offset {v.source.offset} committed before its verdict"
    assert {v.worker_id for v in vs} == {"w1", "w2"}


def test_rebalance_hands_over_without_loss_or_duplicates(workers, names, producer, reader, kafka_bootstrap):
    """While frames flow, a second worker joins (the first one's partitions are revoked and
    re-balanced) and later the first one leaves (SIGTERM): on each revoke the in-flight frames are
    published and committed before the partitions move, so every frame gets exactly one verdict."""
    w1 = workers("w1")
    w1.wait_ready()
    # alone: both partitions, one rebalance (its join), none in progress
    assert (w1.metric("inspector_assigned_partitions"), w1.metric("inspector_rebalances_total")) == (2, 1)
    assert w1.metric("inspector_rebalance_seconds") == 0
    vr = reader(names.verdicts)
    sent: list[str] = []
    stop = threading.Event()

    def publish() -> None:
        i = 0
        while not stop.is_set():
            fid = f"rb-{i:04d}"
            send_frame(producer, names.frames, jpeg(i), camera=f"cam-{i % 4}", frame_id=fid)
            sent.append(fid)
            i += 1
            time.sleep(0.08)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        time.sleep(1.0)
        w2 = workers("w2")
        w2.wait_ready()  # joined: the group re-balanced while w1 was serving
        time.sleep(1.5)
        assert w1.metric("inspector_rebalances_total") == 2  # its join, w2's join
        assert [w.metric("inspector_assigned_partitions") for w in (w1, w2)] == [1, 1]
        assert [w.metric("inspector_rebalance_seconds") for w in (w1, w2)] == [0, 0]
        assert w1.stop() == 0  # leaves: its partitions move to w2 after a drain
        assert w2.wait_metric("inspector_assigned_partitions", 2, timeout=30) == 2
        time.sleep(1.5)
    finally:
        stop.set()
        publisher.join(10)
    recs = vr.read(have_frames(set(sent)), 60, "all verdicts")
    assert w2.stop() == 0
    assert w1.logs().count('"partitions_revoked"') >= 2  # on w2's join and on leaving
    vs = verdicts_of(recs)
    counts = Counter(v.frame_id for v in vs)
    assert set(counts) == set(sent)
    assert [f for f, c in counts.items() if c > 1] == []
    served = Counter(v.worker_id for v in vs)
    assert served["w1"] > 0 and served["w2"] > 0, served
    assert committed_offsets(kafka_bootstrap, names.group, names.frames) == dict(
        Counter(v.source.partition for v in vs)
    )


def test_a_rebalance_held_up_by_another_member_is_visible_and_logged(workers, names, kafka_bootstrap,
                                                                     kafka_group_settings):
    """A member of the group that stops polling holds a rebalance up (the broker waits for it up to
    its rebalance timeout): the joining worker is not ready, ``inspector_rebalance_seconds`` grows,
    ``rebalance_slow`` is logged once past drain + two sessions; when the member polls again the
    worker gets its partition and the gauge is back at 0."""
    from kafka import KafkaConsumer

    other = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=names.group, enable_auto_commit=False,
                          **{**kafka_group_settings, "max_poll_interval_ms": 90_000})
    other.subscribe([names.frames])
    deadline = time.monotonic() + 30
    while len(other.assignment()) < 2 and time.monotonic() < deadline:
        other.poll(timeout_ms=200)
    assert len(other.assignment()) == 2
    try:
        w = workers("held", INSPECTOR_DRAIN_TIMEOUT_S="1")  # warned after 1 + 2 × 6 s
        deadline = time.monotonic() + 60
        while '"rebalance_slow"' not in w.logs() and time.monotonic() < deadline:
            time.sleep(0.5)
        waited = w.metric("inspector_rebalance_seconds")
        assert waited > 13, (waited, w.logs()[-2000:])
        assert not w.ready() and w.metric("inspector_assigned_partitions") == 0
        deadline = time.monotonic() + 30
        while len(other.assignment()) != 1 and time.monotonic() < deadline:
            other.poll(timeout_ms=200)  # rejoins: the rebalance completes
        assert len(other.assignment()) == 1
        w.wait_ready(timeout=30)
        assert w.metric("inspector_assigned_partitions") == 1 and w.metric("inspector_rebalance_seconds") == 0
        slow = [json.loads(x) for x in w.logs().splitlines() if '"rebalance_slow"' in x]
        assert len(slow) == 1 and slow[0]["expected_within_s"] == 13.0
    finally:
        other.close()
    assert w.stop() == 0


def test_bad_frames_are_rejected_and_dead_lettered(workers, names, producer, reader):
    """Corrupt, empty, oversized, unsupported, too many pixels, unknown model, garbage model header:
    each gets a `rejected` verdict with its reason and an exact copy on the DLQ; the stream goes on."""
    import cv2
    import numpy as np

    w = workers("w1", INSPECTOR_MAX_FRAME_BYTES="100000", INSPECTOR_MAX_PIXELS="1000000")
    big = np.zeros((1200, 1200), np.uint8)
    huge_png = cv2.imencode(".png", big)[1].tobytes()
    assert len(huge_png) < 100000
    good = jpeg(1)
    cases = [
        ("g1", good, {}, None),
        ("corrupt", b"\xff\xd8\xff\xe0" + os.urandom(500), {}, "undecodable"),
        ("truncated", good[: len(good) // 3], {}, "undecodable"),
        ("g2", good, {}, None),
        ("empty", b"", {}, "empty"),
        ("oversized", os.urandom(150_000), {}, "too_large_bytes"),
        ("text", b"hello, not an image at all", {}, "unsupported_type"),
        ("pixels", huge_png, {}, "too_many_pixels"),
        ("unknown-model", good, {"model": "no-such-model"}, "unknown_model"),
        ("bad-header", good, {"extra": [("model", b"\xff\xfe\xfd")]}, "bad_header"),
        ("g3", good, {}, None),
    ]
    for fid, value, kw, _ in cases:
        send_frame(producer, names.frames, value, camera="cam-x", frame_id=fid, **kw)
    w.wait_ready()
    recs = reader(names.verdicts).read(have_frames({c[0] for c in cases}), 60, "verdicts")
    by_id = {v.frame_id: v for v in verdicts_of(recs)}
    dlq = reader(names.dlq).read(lambda r: len(r) >= 8, 30, "dead letters")
    dl_by_id = {DeadLetter.from_kafka(r.headers).frame_id: r for r in dlq}
    for fid, value, _, reason in cases:
        v = by_id[fid]
        if reason is None:
            assert v.verdict in ("ok", "defect"), (fid, v.reason, v.detail)
            assert fid not in dl_by_id
            continue
        assert v.verdict == "rejected" and v.reason == reason, (fid, v.reason, v.detail)
        assert v.score is None and v.detail
        rec = dl_by_id[fid]
        letter = DeadLetter.from_kafka(rec.headers)
        assert rec.value == value and rec.key == b"cam-x"
        assert letter.reason == reason and letter.source_offset == v.source.offset
        assert letter.source_topic == names.frames and letter.worker_id == "w1"
        assert ("camera-id", b"cam-x") in rec.headers  # original headers kept
    assert len(dlq) == 8
    assert w.metric("inspector_rejects_total") == 8
    assert w.metric("inspector_rejects_total", reason="too_large_bytes") == 1
    assert w.proc.poll() is None  # still serving
    assert w.stop() == 0


def test_redis_outage_does_not_stop_verdicts(workers, names, producer, reader, redis_server):
    """Redis stopped: verdicts keep flowing, heatmap failures are counted; back: heatmaps again."""
    w = workers("w1", INSPECTOR_REDIS_URL=redis_server.url, INSPECTOR_REDIS_RETRY_AFTER_S="0.5")
    w.wait_ready()
    vr = reader(names.verdicts)
    rc = redis.Redis.from_url(redis_server.url, socket_timeout=2)

    phase1 = [f"r1-{i}" for i in range(6)]
    for i, fid in enumerate(phase1):
        send_frame(producer, names.frames, jpeg(i), camera="cam-r", frame_id=fid)
    vr.read(have_frames(set(phase1)), 60, "phase 1")
    w.wait_metric("inspector_heatmap_writes_total", 6, timeout=10)
    assert rc.exists(f"inspector:heatmap:{phase1[-1]}")
    assert w.metric("inspector_heatmap_failures_total") == 0

    redis_server.stop()
    phase2 = [f"r2-{i}" for i in range(10)]
    for i, fid in enumerate(phase2):
        send_frame(producer, names.frames, jpeg(i), camera="cam-r", frame_id=fid)
    vr.read(have_frames(set(phase2)), 60, "verdicts while Redis is down")
    assert w.wait_metric("inspector_heatmap_failures_total", 10, timeout=10) >= 10
    assert w.get("/readyz")[0] == 200  # a cache outage does not make the worker unready

    redis_server.start()
    time.sleep(1.0)  # past the retry-after window
    phase3 = [f"r3-{i}" for i in range(6)]
    for i, fid in enumerate(phase3):
        send_frame(producer, names.frames, jpeg(i), camera="cam-r", frame_id=fid)
    vr.read(have_frames(set(phase3)), 60, "phase 3")
    rc = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    deadline = time.monotonic() + 15
    while not rc.exists(f"inspector:heatmap:{phase3[-1]}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rc.exists(f"inspector:heatmap:{phase3[-1]}"), "heatmaps did not come back with Redis"
    assert w.metric("inspector_heatmap_writes_total") >= 7
    assert w.stop() == 0


def test_model_rollout_refuses_bad_then_swaps_new_version(workers, names, producer, reader, tiny_checkpoint,
                                                           kafka_bootstrap, tmp_path):
    """A corrupt checkpoint on the control topic is refused (counted, old model keeps serving); a good
    new version published mid-stream is picked up between batches and no frame is lost; a second
    model announced on the control topic serves the frames whose `model` header names it."""
    v1, model = manifest_version(tiny_checkpoint), manifest_name(tiny_checkpoint)
    # a bad update: weights do not match the manifest's hash
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    mf = json.loads((bad / "manifest.json").read_text())
    mf["version"] = "bad-1"
    (bad / "manifest.json").write_text(json.dumps(mf))
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100:] = bytes(100)
    weights.write_bytes(bytes(data))
    # a good new version: same weights, new version (a real promotion would retrain)
    good = tmp_path / "v2"
    shutil.copytree(tiny_checkpoint, good)
    mf = json.loads((good / "manifest.json").read_text())
    mf["version"] = "v2-" + v1
    (good / "manifest.json").write_text(json.dumps(mf))
    v2 = mf["version"]
    # a second model served by the same worker, routed by the `model` header
    other = tmp_path / "other"
    shutil.copytree(tiny_checkpoint, other)
    mf = json.loads((other / "manifest.json").read_text())
    mf["name"] = other_name = f"{model}-b"
    (other / "manifest.json").write_text(json.dumps(mf))

    w = workers("w1")
    w.wait_ready()
    vr = reader(names.verdicts)
    ctrl = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        publish_update(ctrl, names.models, update_for_checkpoint(bad))
        assert w.wait_metric("inspector_model_refused_total", 1, model=model) == 1
        assert w.metric("inspector_model_info", model=model, version=v1) == 1

        ids = [f"m-{i:03d}" for i in range(40)]
        for i, fid in enumerate(ids):
            send_frame(producer, names.frames, jpeg(i), camera=f"cam-{i % 2}", frame_id=fid)
            if i == 10:
                publish_update(ctrl, names.models, update_for_checkpoint(good))
            time.sleep(0.1)
        w.wait_metric("inspector_model_info", 1, model=model, version=v2)
        publish_update(ctrl, names.models, update_for_checkpoint(other))
        w.wait_metric("inspector_model_info", 1, model=other_name)
        tail_ids = [f"m-after-{i}" for i in range(5)]
        for i, fid in enumerate(tail_ids):
            send_frame(producer, names.frames, jpeg(i), camera="cam-0", frame_id=fid)
        other_ids = [f"m-other-{i}" for i in range(3)]
        for i, fid in enumerate(other_ids):
            send_frame(producer, names.frames, jpeg(i), camera="cam-9", frame_id=fid, model=other_name)
        recs = vr.read(have_frames(set(ids) | set(tail_ids) | set(other_ids)), 60, "all verdicts")
    finally:
        ctrl.close()
    vs = verdicts_of(recs)
    routed = [v for v in vs if v.frame_id in other_ids]
    assert [v.model for v in routed] == [other_name] * 3 and all(v.verdict != "rejected" for v in routed)
    vs = [v for v in vs if v.frame_id not in other_ids]
    assert Counter(v.frame_id for v in vs) == Counter(ids + tail_ids)  # none lost, none doubled
    assert {v.model for v in vs} == {model}
    assert {v.model_version for v in vs} == {v1, v2}  # the bad version never served
    assert all(v.model_version == v2 for v in vs if v.frame_id in tail_ids)
    assert all(v.model_version == v1 for v in vs if v.frame_id in ids[:5])
    for cam in ("cam-0", "cam-1"):  # swap happens once, between batches: v1...v1 v2...v2
        seq = [v.model_version for v in vs if v.camera_id == cam]
        assert seq == sorted(seq, key=lambda x: x == v2), seq
    assert w.metric("inspector_model_info", model=model, version=v1) == 0
    assert w.metric("inspector_model_loads_total", model=model) >= 2
    assert w.stop() == 0


def test_kcat_as_camera_and_as_mes_consumer(workers, names, kafka_bootstrap, tmp_path):
    """librdkafka on both ends (kcat; what most camera and MES connectors are built on): kcat
    publishes frames, one of them not an image; the worker answers each; kcat reads the
    verdicts and the dead letter back."""
    assert shutil.which("kcat"), "kcat is not installed (deploy/local/install.sh installs it)"
    w = workers("w1")
    frames = {f"kcat-{i}": jpeg(i) for i in range(3)} | {"kcat-bad": b"this is not an image"}
    for fid, data in frames.items():
        path = tmp_path / f"{fid}.bin"
        path.write_bytes(data)
        sent = kcat("-b", kafka_bootstrap, "-P", "-t", names.frames, "-k", "cam-kcat",
                     "-H", f"frame-id={fid}", "-H", "camera-id=cam-kcat", "-H", "line-id=line-k", str(path))
        assert sent.returncode == 0, sent.stderr
    w.wait_ready()
    deadline = time.monotonic() + 90
    found: dict[str, Verdict] = {}
    while time.monotonic() < deadline and len(found) < len(frames):
        out = kcat("-b", kafka_bootstrap, "-C", "-t", names.verdicts, "-o", "beginning", "-e", "-q",
                    "-f", "%k\t%s\n")
        assert out.returncode == 0, out.stderr
        for line in out.stdout.decode().splitlines():
            key, value = line.split("\t", 1)
            v = Verdict.model_validate_json(value)
            assert key == "cam-kcat" and v.camera_id == "cam-kcat" and v.line_id == "line-k"
            found[v.frame_id] = v
        time.sleep(0.5)
    assert set(found) == set(frames), f"verdicts read with kcat: {sorted(found)}; worker log:\n{w.logs()[-2000:]}"
    assert all(found[f"kcat-{i}"].verdict in ("ok", "defect") for i in range(3))
    assert found["kcat-bad"].verdict == "rejected" and found["kcat-bad"].source.topic == names.frames
    dlq = kcat("-b", kafka_bootstrap, "-C", "-t", names.dlq, "-o", "beginning", "-e", "-q", "-c", "1",
                "-f", "%h\t%s\n")
    assert dlq.returncode == 0, dlq.stderr
    headers, original = dlq.stdout.decode().rstrip("\n").split("\t", 1)
    assert "dlq-frame-id=kcat-bad" in headers and "dlq-reason=" in headers
    assert original == "this is not an image"
    assert w.stop() == 0
