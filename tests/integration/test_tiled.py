"""Tiled models in a real worker: served beside a whole-frame model and rolled out without a
restart; a 20-megapixel frame through a tiled model within the worker's memory bound."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import redis
from kafka import KafkaProducer

from inspector.pipeline.budget import rss_bytes
from inspector.runtime.settings import working_memory_bound
from inspector.contracts.control import publish_update
from inspector.model.repository import update_for_checkpoint
from inspector.runtime.settings import Settings
from inspector.model.tiling import fit_to_aspect
from tests.integration.harness import have_frames, jpeg, manifest_name, send_frame, verdicts_of
from tests.integration.test_hostile_input import LIMITS, SLACK, RssSampler
from tests.releases import release_copy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]
MB = 1 << 20


def big_frame(h: int, w: int, seed: int = 0) -> bytes:
    """A textured grey part, h x w, with a dark scratch, as JPEG."""
    rng = np.random.default_rng(seed)
    small = rng.integers(90, 170, (max(2, h // 16), max(2, w // 16)), dtype=np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    cv2.line(img, (w // 3, h // 3), (w // 3 + 40, h // 3 + 25), 10, 3)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def test_tiled_and_whole_frame_models_side_by_side_rolled_out_without_a_restart(
        workers, names, producer, reader, tiny_checkpoint, tiled_checkpoint, kafka_bootstrap, redis_url, tmp_path):
    """The worker serves the whole-frame model; a tiled model announced on the control topic is
    served beside it (frames routed by their `model` header); a tiled v2 replaces it between
    batches. Tiled verdicts: regions inside the frame, the mask and the Redis heatmap in the
    frame's aspect ratio."""
    tiled = manifest_name(tiled_checkpoint)
    v1 = release_copy(tiled_checkpoint, tmp_path / "tiled-v1", "t-v1")
    v2 = release_copy(tiled_checkpoint, tmp_path / "tiled-v2", "t-v2", age_s=60)
    w = workers("tiles-1")
    w.wait_ready()
    ctrl = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        publish_update(ctrl, names.models, update_for_checkpoint(v1))
        assert w.wait_metric("inspector_model_info", 1, timeout=60, model=tiled, version="t-v1") == 1
        sizes = {"big-0": (480, 640), "big-1": (333, 1001), "tiny-tile": (40, 50)}
        for i, (fid, (h, wd)) in enumerate(sizes.items()):
            send_frame(producer, names.frames, big_frame(h, wd, i), camera="cam-big", frame_id=fid, model=tiled)
        for i in range(4):
            send_frame(producer, names.frames, jpeg(i), camera="cam-small", frame_id=f"small-{i}")
        vr = reader(names.verdicts)
        vs = {v.frame_id: v for v in verdicts_of(vr.read(have_frames(set(sizes) | {f"small-{i}" for i in range(4)}),
                                                        120, "verdicts of both models"))}
        assert {vs[f].model for f in sizes} == {tiled} and {vs[f].model_version for f in sizes} == {"t-v1"}
        assert {vs[f"small-{i}"].model for i in range(4)} == {manifest_name(tiny_checkpoint)}
        for fid, (h, wd) in sizes.items():
            v = vs[fid]
            assert v.verdict in ("ok", "defect")
            assert v.mask.decode().shape == fit_to_aspect((h, wd), 32)
            for reg in v.regions:
                assert 0 <= reg.x0 < reg.x1 <= wd and 0 <= reg.y0 < reg.y1 <= h
        rc = redis.Redis.from_url(redis_url)
        deadline = time.monotonic() + 10
        while rc.get("inspector:heatmap:big-1") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        heat = cv2.imdecode(np.frombuffer(rc.get("inspector:heatmap:big-1"), np.uint8), cv2.IMREAD_GRAYSCALE)
        assert heat.shape == fit_to_aspect((333, 1001), 1024) == (333, 1001)  # the frame's aspect, at most 1024 px

        publish_update(ctrl, names.models, update_for_checkpoint(v2))
        assert w.wait_metric("inspector_model_info", 1, timeout=60, model=tiled, version="t-v2") == 1
        send_frame(producer, names.frames, big_frame(480, 640, 9), camera="cam-big", frame_id="big-after", model=tiled)
        after = [v for v in verdicts_of(vr.read(have_frames({"big-after"}), 60, "verdict after the rollout"))
                 if v.frame_id == "big-after"]
        assert after[0].model_version == "t-v2"
    finally:
        ctrl.close()
    assert w.stop() == 0


def test_a_20_megapixel_frame_through_a_tiled_model_stays_within_the_memory_bound(
        workers, names, reader, tiled_checkpoint, kafka_bootstrap):
    """5472 x 3648 px (20 MP): one verdict, and the worker's RSS, sampled every 50 ms, stays below
    its idle footprint plus the bound its settings give (``working_memory_bound``)."""
    limits = {**LIMITS, "INSPECTOR_MAX_PIXELS": str(24_000_000), "INSPECTOR_MAX_DECODED_BYTES": str(96 * MB),
              "INSPECTOR_MAX_INFLIGHT_BYTES": str(32 * MB), "INSPECTOR_KAFKA_FETCH_MAX_BYTES": str(32 * MB),
              "INSPECTOR_KAFKA_MAX_PARTITION_FETCH_BYTES": str(32 * MB), "INSPECTOR_MAX_TILES_PER_CALL": "64"}
    w = workers("tiles-20mp", INSPECTOR_CHECKPOINT=str(tiled_checkpoint), **limits)
    w.wait_ready()
    vr = reader(names.verdicts)
    big = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=64 * MB)
    try:
        # a warm-up frame of more tiles than one engine call: the call's buffers are part of the idle footprint
        send_frame(big, names.frames, big_frame(600, 800, 1), camera="cam-20mp", frame_id="warm")
        vr.read(have_frames({"warm"}), 60, "warm-up verdict")
        idle = rss_bytes(w.proc.pid)
        bound = idle + working_memory_bound(Settings(**{k[len("INSPECTOR_"):].lower(): v for k, v in limits.items()}))
        sampler = RssSampler(w.proc.pid)
        sampler.start()
        send_frame(big, names.frames, big_frame(3648, 5472, 2), camera="cam-20mp", frame_id="20mp")
        recs = vr.read(have_frames({"20mp"}), 300, "the 20 MP verdict")
    finally:
        big.close()
    sampler.stopped.set()
    sampler.join()
    v = [x for x in verdicts_of(recs) if x.frame_id == "20mp"][0]
    assert v.verdict in ("ok", "defect") and v.mask.decode().shape == fit_to_aspect((3648, 5472), 32)
    print(f"RELIABILITY 20 MP tiled frame: idle {idle / MB:.0f} MB, peak {sampler.peak / MB:.0f} MB "
          f"({sampler.samples} samples), bound {bound / MB:.0f} MB (+{SLACK // MB} MB slack), "
          f"inference {v.timings.inferred_at - v.timings.received_at:.0f} ms")
    assert sampler.peak <= bound + SLACK
    assert w.stop() == 0
