"""The reusable harness of the integration tests: `inspector serve` as a real subprocess, topics
and consumer groups of its own per test, a producer of frames, a reader of verdicts.

The fixtures built on it (``names``, ``worker_env``, ``workers``, ``producer``, ``reader``) are in
``conftest.py``.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from devtools.workers import ServeProcess, WorkerNotReady
from inspector.contracts.wire import (
    CAMERA_ID_HEADER,
    CAPTURED_AT_HEADER,
    CONTENT_TYPE_HEADER,
    FRAME_ID_HEADER,
    LINE_ID_HEADER,
    MODEL_HEADER,
    Verdict,
)

PARTITIONS = 2


def jpeg(index: int, size: int = 64, defect: str | None = None, width: int | None = None, seed: int = 0) -> bytes:
    from trainer.synthetic import make_frame

    return make_frame(defect, size=size, seed=seed, index=index, fmt="jpeg", width=width)


class Names:
    def __init__(self) -> None:
        self.tag = tag = uuid.uuid4().hex[:8]
        self.frames = f"frames-{tag}"
        self.verdicts = f"verdicts-{tag}"
        self.dlq = f"dlq-{tag}"
        self.models = f"models-{tag}"
        self.group = f"group-{tag}"


def kcat(*args: str, stdin: bytes | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run kcat (librdkafka: a non-Python client, as most cameras and MES connectors are)."""
    return subprocess.run(["kcat", *args], input=stdin, capture_output=True, timeout=timeout, check=False)  # noqa: S603


def create_topics(bootstrap: str, names: Names) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics(
            [
                NewTopic(names.frames, PARTITIONS, 1),
                NewTopic(names.verdicts, PARTITIONS, 1),
                NewTopic(names.dlq, 1, 1),
                NewTopic(names.models, 1, 1, topic_configs={"cleanup.policy": "compact"}),
            ]
        )
    finally:
        admin.close()


class Worker(ServeProcess):
    """`inspector serve` of one test: the test's settings over short group sessions, one CPU
    thread, small batches; log ``TMP/NAME.log``."""

    def __init__(self, tmp: Path, env: dict[str, str], name: str) -> None:
        super().__init__(tmp / f"{name}.log", {
            "OMP_NUM_THREADS": "1",
            "INSPECTOR_WORKER_ID": name,
            "INSPECTOR_DEVICE": "cpu",
            "INSPECTOR_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "INSPECTOR_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
            "INSPECTOR_ROLLOUT_CATCHUP_S": "3",
            "INSPECTOR_COMMIT_INTERVAL_MS": "200",
            "INSPECTOR_MAX_DELAY_MS": "20",
            "INSPECTOR_MAX_BATCH": "8",
            **env,
        }, name=name)

    def wait_ready(self, timeout: float = 60, every: float = 0.2) -> float:
        try:
            return super().wait_ready(timeout, every)
        except WorkerNotReady as exc:
            raise AssertionError(str(exc)) from None

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        code, text = self.get("/metrics")
        assert code == 200
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, value = line.rsplit(" ", 1)
            metric, _, lab = head.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in lab for k, v in labels.items()):
                total += float(value)
        return total

    def wait_metric(self, name: str, at_least: float, timeout: float = 30.0, **labels: str) -> float:
        """Poll ``metric`` until it reaches ``at_least`` or ``timeout`` passes; returns the last value
        (the caller asserts on it, so a timeout fails with the value seen)."""
        deadline = time.monotonic() + timeout
        while (value := self.metric(name, **labels)) < at_least and time.monotonic() < deadline:
            time.sleep(0.1)
        return value

    def stop(self, grace: float = 30) -> int | None:
        """SIGTERM; a worker still running after ``grace`` seconds is killed and fails the test."""
        code = super().stop(grace)
        if self.killed_after_grace:
            raise AssertionError(f"worker ignored SIGTERM for {grace}s:\n{self.log_tail()}")
        return code


def send_frame(producer, topic: str, value: bytes, *, camera: str, frame_id: str | None = None,
               model: str | None = None, line: str | None = "line-1", extra: list | None = None) -> None:
    headers = [(CAMERA_ID_HEADER, camera.encode()), (CAPTURED_AT_HEADER, str(int(time.time() * 1000)).encode()),
               (CONTENT_TYPE_HEADER, b"image/jpeg")]
    if frame_id is not None:
        headers.append((FRAME_ID_HEADER, frame_id.encode()))
    if line is not None:
        headers.append((LINE_ID_HEADER, line.encode()))
    if model is not None:
        headers.append((MODEL_HEADER, model.encode()))
    headers += extra or []
    producer.send(topic, key=camera.encode(), value=value, headers=headers).get(timeout=10)


class Reader:
    """Reads a topic from the beginning (no group), accumulating records across calls."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                      auto_offset_reset="earliest")
        parts = None
        deadline = time.monotonic() + 10
        while not parts and time.monotonic() < deadline:
            parts = self.consumer.partitions_for_topic(topic)
            time.sleep(0.1)
        assert parts, f"topic {topic} has no partitions"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.records: list = []

    def read(self, until, timeout: float, what: str = "records") -> list:
        deadline = time.monotonic() + timeout
        while True:
            for recs in self.consumer.poll(timeout_ms=200).values():
                self.records.extend(recs)
            if until(self.records):
                return self.records
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: have {len(self.records)}")

    def close(self) -> None:
        self.consumer.close()


def verdicts_of(records) -> list[Verdict]:
    return [Verdict.from_bytes(r.value) for r in records]


def have_frames(ids: set[str]):
    return lambda recs: ids <= {Verdict.from_bytes(r.value).frame_id for r in recs}


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic and om.offset >= 0}


def manifest_version(ckpt: Path) -> str:
    return json.loads((ckpt / "manifest.json").read_text())["version"]


def manifest_name(ckpt: Path) -> str:
    return json.loads((ckpt / "manifest.json").read_text())["name"]


def tally(test: str, sent: list[str] | set[str], records: list) -> dict[str, int]:
    """Frames sent / verdicts / duplicates / lost of one test, printed as one summary line
    (visible with ``pytest -s`` and in the captured output of a failing test)."""
    from collections import Counter

    counts = Counter(Verdict.from_bytes(r.value).frame_id for r in records)
    wanted = set(sent)
    out = {
        "sent": len(wanted),
        "verdicts": sum(counts[f] for f in wanted),
        "duplicates": sum(counts[f] - 1 for f in wanted if counts[f] > 1),
        "lost": len(wanted - set(counts)),
    }
    print(f"RELIABILITY {test}: " + " ".join(f"{k}={v}" for k, v in out.items()), flush=True)
    return out


class Stream:
    """Cameras publishing 64 px JPEG frames at a steady ``rate`` from a thread until ``stop()``;
    ``sent`` lists the frame ids whose send the broker acknowledged. Eight cameras, because the
    keys cam-0..cam-3 all hash to partition 1 of 2 (cam-4 and cam-7 go to partition 0)."""

    def __init__(self, bootstrap: str, topic: str, prefix: str, rate: float = 10.0, cameras: int = 8) -> None:
        import threading

        from kafka import KafkaProducer

        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        self.topic, self.prefix, self.rate, self.cameras = topic, prefix, rate, cameras
        self.sent: list[str] = []
        self.errors = 0
        self._frames = [jpeg(i) for i in range(8)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"stream-{prefix}")

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        i = 0
        t0 = time.monotonic()
        while not self._stop.is_set():
            fid = f"{self.prefix}-{i:05d}"
            try:
                send_frame(self.producer, self.topic, self._frames[i % len(self._frames)],
                           camera=f"cam-{i % self.cameras}", frame_id=fid)
                self.sent.append(fid)
            except Exception:  # noqa: BLE001 - broker away (a broker-restart test): not sent, not counted
                self.errors += 1
            i += 1
            self._stop.wait(max(0.0, t0 + i / self.rate - time.monotonic()))

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(30)
        self.producer.close(timeout=5)
        return list(self.sent)


def worker_ids_by_frame(records: list) -> dict[str, list[str]]:
    """frame id -> the worker ids that gave it a verdict (one entry per verdict)."""
    out: dict[str, list[str]] = {}
    for v in verdicts_of(records):
        out.setdefault(v.frame_id, []).append(v.worker_id)
    return out


def verdicts_from(worker: str, at_least: int = 1) -> Callable[[list], bool]:
    """``Reader.read`` condition: ``worker`` has published at least ``at_least`` verdicts."""
    return lambda recs: sum(1 for v in verdicts_of(recs) if v.worker_id == worker) >= at_least
