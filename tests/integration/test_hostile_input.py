"""The whole fuzz corpus (tests/data/fuzz/corpus.py) through a real worker, plus a burst of frames
that are small on the wire and large decoded, while the worker's RSS is sampled.

Each frame gets a verdict: a model verdict or ``rejected`` with the reason its case allows (and a
dead-letter copy); the worker never crashes, and its RSS never exceeds its idle footprint plus the
working-memory bound its settings give (``inspector.runtime.settings.working_memory_bound``).
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from kafka import KafkaProducer

from inspector.pipeline.budget import rss_bytes
from inspector.runtime.settings import working_memory_bound
from inspector.runtime.settings import Settings
from inspector.contracts.wire import DeadLetter, Verdict
from tests.data.fuzz.corpus import MAX_PIXELS, cases, memory_burst
from tests.integration.harness import have_frames, jpeg, send_frame, tally, verdicts_of

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

MB = 1 << 20
LIMITS = {
    "INSPECTOR_MAX_PIXELS": str(MAX_PIXELS),
    "INSPECTOR_MAX_DECODED_BYTES": str(64 * MB),
    "INSPECTOR_MAX_INFLIGHT_BYTES": str(16 * MB),
    "INSPECTOR_KAFKA_FETCH_MAX_BYTES": str(16 * MB),
    "INSPECTOR_KAFKA_MAX_PARTITION_FETCH_BYTES": str(8 * MB),
    "INSPECTOR_DECODE_THREADS": "2",
}
SLACK = 100 * MB  # allocator and thread-stack noise


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.samples = pid, 0, 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.05):
            self.peak = max(self.peak, rss_bytes(self.pid))
            self.samples += 1


def test_fuzz_corpus_through_a_worker_gets_allowed_verdicts_within_the_memory_bound(
        workers, names, reader, producer, kafka_bootstrap):
    w = workers("fz-1", **LIMITS)
    w.wait_ready()
    vr = reader(names.verdicts)
    send_frame(producer, names.frames, jpeg(0), camera="cam-warm", frame_id="warm-up")
    vr.read(have_frames({"warm-up"}), 60, "the warm-up verdict")
    idle = rss_bytes(w.proc.pid)
    bound = idle + working_memory_bound(Settings(**{k[len("INSPECTOR_"):].lower(): v for k, v in LIMITS.items()}))
    sampler = RssSampler(w.proc.pid)
    sampler.start()

    big = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5, max_request_size=64 * MB)
    where: dict[tuple[int, int], str] = {}  # (partition, offset) -> case name
    corpus = {c.name: c for c in cases()}
    futures = []
    try:
        for c in corpus.values():
            headers = list(c.headers)
            if c.camera_header:
                headers = [("camera-id", b"cam-fuzz"), ("frame-id", f"fuzz-{c.name}".encode()), *headers]
            futures.append((c.name, big.send(names.frames, key=c.key, value=c.value, headers=headers)))
        burst = memory_burst()
        for i, value in enumerate(burst):
            name = f"burst-{i:02d}"
            futures.append((name, big.send(names.frames, key=f"cam-b{i % 8}".encode(), value=value,
                                           headers=[("frame-id", name.encode())])))
        for name, fut in futures:
            md = fut.get(timeout=30)
            where[(md.partition, md.offset)] = name
    finally:
        big.close()

    want = {name for name, _ in futures}

    def answered(recs: list) -> bool:
        return want <= {where.get((v.source.partition, v.source.offset)) for v in verdicts_of(recs)}

    recs = vr.read(answered, 180, "a verdict for every corpus frame")
    sampler.stopped.set()
    sampler.join(5)
    assert w.proc.poll() is None, "the worker died"
    mine = [r for r in recs if (Verdict.from_bytes(r.value).source.partition,
                                Verdict.from_bytes(r.value).source.offset) in where]
    t = tally("test_fuzz_corpus_through_a_worker", [f"{p}:{o}" for p, o in where],
              [_Rekeyed(r, where) for r in mine])
    assert t["lost"] == 0 and t["duplicates"] == 0

    outcomes: dict[str, str] = {}
    for v in verdicts_of(mine):
        name = where[(v.source.partition, v.source.offset)]
        outcomes[name] = v.verdict if v.verdict != "rejected" else f"rejected:{v.reason}"
        if v.verdict == "rejected":
            assert v.detail, name
    wrong = {n: o for n, o in outcomes.items() if n in corpus and o not in corpus[n].allowed}
    assert not wrong, wrong
    assert all(outcomes[f"burst-{i:02d}"] in ("ok", "defect") for i in range(len(burst)))
    print("RELIABILITY corpus outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(Counter(outcomes.values()).items())))

    rejected = sum(1 for o in outcomes.values() if o.startswith("rejected"))
    dlq = reader(names.dlq).read(lambda r: len(r) >= rejected, 60, "dead letters")
    assert Counter(DeadLetter.from_kafka(r.headers).reason for r in dlq) == Counter(
        o.split(":", 1)[1] for o in outcomes.values() if o.startswith("rejected"))

    print(f"RELIABILITY worker RSS: idle {idle / MB:.0f} MB, peak {sampler.peak / MB:.0f} MB "
          f"({sampler.samples} samples), bound {bound / MB:.0f} MB (+{SLACK / MB:.0f} MB slack)")
    assert sampler.samples > 10
    assert sampler.peak <= bound + SLACK
    assert w.metric("inspector_decoded_bytes") == 0  # every reservation was given back
    assert w.stop() == 0


class _Rekeyed:
    """A verdict record whose frame id is its source position (corpus frames may lack ids)."""

    def __init__(self, record, where: dict) -> None:
        v = Verdict.from_bytes(record.value)
        v.frame_id = f"{v.source.partition}:{v.source.offset}"
        self.value = v.to_bytes()


def test_a_large_frame_behind_many_small_ones_does_not_stall_the_worker(workers, names, reader, producer):
    """Head-of-line: decoders run ahead of inference, so small frames polled after a large one can
    take the whole decoded-bytes budget while the large one waits for room, and the pump (poll
    order) waits for the large one. The frame at the head of the line may overdraw the budget
    (``inspector.pipeline.budget``); without that this stream never gets its verdicts."""
    import cv2
    import numpy as np

    w = workers("hol-1", INSPECTOR_MAX_DECODED_BYTES=str(16 * MB), INSPECTOR_DECODE_THREADS="2")
    w.wait_ready()
    vr = reader(names.verdicts)
    small = [cv2.imencode(".jpg", np.full((400, 400, 3), 60 + i, np.uint8))[1].tobytes() for i in range(4)]
    large = cv2.imencode(".jpg", np.full((2000, 2000, 3), 90, np.uint8))[1].tobytes()  # 12 MB decoded
    ids = []
    for round_ in range(3):
        for i in range(40):
            ids.append(f"hol-{round_}-s{i:02d}")
            send_frame(producer, names.frames, small[i % 4], camera="cam-hol", frame_id=ids[-1])
        ids.append(f"hol-{round_}-large")
        send_frame(producer, names.frames, large, camera="cam-hol", frame_id=ids[-1])
    producer.flush()
    recs = vr.read(have_frames(set(ids)), 120, "a verdict for every frame of the stream")
    t = tally("test_a_large_frame_behind_many_small_ones", ids, recs)
    assert t["lost"] == 0 and t["duplicates"] == 0
    assert {v.verdict for v in verdicts_of(recs)} <= {"ok", "defect"}
    assert w.metric("inspector_decoded_bytes") == 0
    assert w.stop() == 0
