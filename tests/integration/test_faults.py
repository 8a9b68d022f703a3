"""Faults under load, with real parts: workers SIGKILLed and SIGTERMed, Redis slow, stopped and back,
the broker restarted, bad checkpoints on the control topic.

Every test publishes a steady stream of frames while the fault happens and prints one line
``RELIABILITY <test>: sent=N verdicts=N duplicates=N lost=N`` (``pytest -s`` shows it). The
guarantees checked: every frame gets a verdict while one worker runs; duplicates only for frames
in flight at a crash (one of their verdicts is from the crashed worker); none after a SIGTERM;
a slow or dead Redis never holds a verdict back beyond a bounded time; a bad checkpoint never
replaces the live model, and its refusal shows in logs and metrics.
"""

from __future__ import annotations

import json
import pickle
import shutil
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaProducer

from devtools.localstack import LocalBroker
from inspector.contracts.control import publish_update
from inspector.model.repository import update_for_checkpoint
from inspector.contracts.wire import Verdict
from tests.integration.harness import (
    Names,
    Stream,
    committed_offsets,
    create_topics,
    have_frames,
    jpeg,
    manifest_name,
    manifest_version,
    send_frame,
    tally,
    verdicts_from,
    verdicts_of,
    worker_ids_by_frame,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]


def assert_duplicates_only_from_crashes(records: list, crashed: set[str]) -> None:
    """A frame with several verdicts must have one from a worker that was SIGKILLed (in flight)."""
    for fid, by in worker_ids_by_frame(records).items():
        if len(by) > 1:
            assert crashed & set(by), f"{fid} answered {len(by)} times by {by}, none of them crashed"
            assert len(by) - 1 <= sum(1 for w in by if w in crashed), (fid, by)


# ---------------------------------------------------------------------------------------------
# worker crashes and stops
# ---------------------------------------------------------------------------------------------


def test_worker_sigkilled_repeatedly_under_load(workers, names, reader, kafka_bootstrap):
    """Two SIGKILLs while cameras keep publishing, each followed by a restart: no frame lost,
    duplicates only for frames the killed worker had in flight."""
    w = workers("w-1")
    w.wait_ready()
    vr = reader(names.verdicts)
    stream = Stream(kafka_bootstrap, names.frames, "sk", rate=12).start()
    crashed: set[str] = set()
    try:
        for k in range(2, 4):
            vr.read(verdicts_from(w.name, 10), 90, f"verdicts from {w.name}")
            w.kill()
            crashed.add(w.name)
            w = workers(f"w-{k}")
        vr.read(verdicts_from(w.name, 10), 90, f"verdicts from {w.name}")
    finally:
        sent = stream.stop()
    recs = vr.read(have_frames(set(sent)), 120, "a verdict for every frame")
    assert w.stop() == 0
    t = tally("test_worker_sigkilled_repeatedly_under_load", sent, recs)
    assert t["lost"] == 0 and stream.errors == 0
    assert_duplicates_only_from_crashes(recs, crashed)
    assert {v.verdict for v in verdicts_of(recs)} <= {"ok", "defect"}


def test_two_workers_one_killed_and_restarted_rebalances_under_load(workers, names, reader, kafka_bootstrap):
    """Two workers share the partitions; one is SIGKILLed (the group moves its partitions to the
    other after the session timeout) and restarted (another rebalance): nothing is lost."""
    w1, w2 = workers("a-1"), workers("b-1")
    w1.wait_ready()
    w2.wait_ready()
    vr = reader(names.verdicts)
    stream = Stream(kafka_bootstrap, names.frames, "rb", rate=12).start()
    try:
        vr.read(lambda r: verdicts_from("a-1", 5)(r) and verdicts_from("b-1", 5)(r), 90, "both serving")
        w1.kill()
        w3 = workers("a-2")
        w3.wait_ready(90)
        vr.read(verdicts_from("a-2", 5), 90, "the restarted worker serving")
    finally:
        sent = stream.stop()
    recs = vr.read(have_frames(set(sent)), 120, "a verdict for every frame")
    assert w2.stop() == 0 and w3.stop() == 0
    t = tally("test_two_workers_one_killed_and_restarted_rebalances_under_load", sent, recs)
    assert t["lost"] == 0
    assert_duplicates_only_from_crashes(recs, {"a-1"})
    assert w2.logs().count('"partitions_assigned"') >= 2  # took a-1's partitions, then gave some back


def test_sigterm_drains_cleanly_without_duplicates(workers, names, reader, kafka_bootstrap):
    """SIGTERM under load: the worker finishes what it polled, commits and exits 0; its successor
    starts at the committed offsets, so every frame has exactly one verdict."""
    w1 = workers("t-1")
    w1.wait_ready()
    vr = reader(names.verdicts)
    stream = Stream(kafka_bootstrap, names.frames, "st", rate=15).start()
    try:
        vr.read(verdicts_from("t-1", 20), 90, "verdicts from t-1")
        assert w1.stop() == 0
        w2 = workers("t-2")
        vr.read(verdicts_from("t-2", 10), 90, "verdicts from t-2")
    finally:
        sent = stream.stop()
    recs = vr.read(have_frames(set(sent)), 120, "a verdict for every frame")
    assert w2.stop() == 0
    t = tally("test_sigterm_drains_cleanly_without_duplicates", sent, recs)
    assert t["lost"] == 0 and t["duplicates"] == 0
    stopped = [json.loads(x) for x in w1.logs().splitlines() if '"worker_stopped"' in x]
    assert stopped and stopped[-1]["uncommitted"] == 0


# ---------------------------------------------------------------------------------------------
# Redis slow, stopped, back
# ---------------------------------------------------------------------------------------------


class DelayProxy:
    """Loopback TCP proxy in front of Redis that holds every chunk for ``delay`` seconds each way."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.delay = 0.0
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="delay-proxy").start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            self.connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self.listener.close()


def test_redis_slow_then_down_then_back_never_holds_verdicts(workers, names, reader, kafka_bootstrap,
                                                              redis_server):
    """Redis behind a delay proxy: normal, then 6 s per round trip (far past the 0.25 s timeout),
    then stopped, then started again, all while frames flow. Every frame gets one verdict, none
    waits on Redis longer than a bound tied to the Redis timeout, failures are counted, and
    heatmaps are written again once Redis is back."""
    import redis

    redis_timeout_s = 0.25
    bound_s = 20 * redis_timeout_s  # 5 s: far below the proxy's 6 s a Redis wait would cost
    proxy = DelayProxy(redis_server.port)
    w = workers("r-1", INSPECTOR_REDIS_URL=proxy.url, INSPECTOR_REDIS_TIMEOUT_S=str(redis_timeout_s),
                INSPECTOR_REDIS_RETRY_AFTER_S="0.5")
    w.wait_ready()
    vr = reader(names.verdicts)
    stream = Stream(kafka_bootstrap, names.frames, "rd", rate=12).start()
    phases: dict[str, list[str]] = {}

    def phase(name: str, seconds: float) -> None:
        start = len(stream.sent)
        time.sleep(seconds)
        phases[name] = stream.sent[start:len(stream.sent)]

    try:
        phase("normal", 3)
        writes_before = w.metric("inspector_heatmap_writes_total")
        assert writes_before > 0
        proxy.delay = 6.0
        phase("slow", 6)
        redis_server.stop()
        phase("down", 4)
        proxy.delay = 0.0
        redis_server.start()
        time.sleep(1.0)  # past the retry-after window
        phase("back", 4)
    finally:
        sent = stream.stop()
        proxy.close()
    recs = vr.read(have_frames(set(sent)), 120, "a verdict for every frame")
    t = tally("test_redis_slow_then_down_then_back_never_holds_verdicts", sent, recs)
    assert t["lost"] == 0 and t["duplicates"] == 0
    by_id = {v.frame_id: v for v in verdicts_of(recs)}
    for name in ("slow", "down"):
        assert phases[name], name
        waits = [(by_id[f].timings.published_at - by_id[f].timings.received_at) / 1000 for f in phases[name]]
        print(f"RELIABILITY redis {name}: {len(waits)} verdicts, longest received->published {max(waits):.2f} s")
        assert max(waits) < bound_s, f"a verdict waited {max(waits):.1f} s while Redis was {name}"
    assert w.metric("inspector_heatmap_failures_total") > 0
    assert w.get("/readyz")[0] == 200
    rc = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    deadline = time.monotonic() + 20
    while not any(rc.exists(f"inspector:heatmap:{f}") for f in phases["back"][-5:]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert any(rc.exists(f"inspector:heatmap:{f}") for f in phases["back"][-5:]), "no heatmaps after Redis came back"
    assert w.stop() == 0


# ---------------------------------------------------------------------------------------------
# broker restart
# ---------------------------------------------------------------------------------------------


def test_broker_restart_worker_reconnects_without_help(workers, tmp_path):
    """The broker goes away and comes back on the same port with its data (a private Apache
    Kafka: this test stops it): the worker (never restarted, never told) reconnects, rejoins its
    group and answers every frame published after the restart; the topics and committed offsets
    survived, so nothing answered before the restart is answered again."""
    broker = LocalBroker(run_dir=tmp_path / "broker").start()
    names = Names()
    try:
        create_topics(broker.bootstrap, names)
        w = workers("br-1", INSPECTOR_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, INSPECTOR_FRAMES_TOPIC=names.frames,
                    INSPECTOR_VERDICTS_TOPIC=names.verdicts, INSPECTOR_DLQ_TOPIC=names.dlq,
                    INSPECTOR_MODELS_TOPIC=names.models, INSPECTOR_GROUP_ID=names.group)
        w.wait_ready()
        from tests.integration.harness import Reader

        before = Stream(broker.bootstrap, names.frames, "before", rate=15).start()
        time.sleep(3)
        sent_before = before.stop()
        r = Reader(broker.bootstrap, names.verdicts)
        r.read(have_frames(set(sent_before)), 60, "verdicts before the restart")
        r.close()
        deadline = time.monotonic() + 30  # every answered frame committed before the broker goes
        while sum(committed_offsets(broker.bootstrap, names.group, names.frames).values()) < len(sent_before):
            assert time.monotonic() < deadline, "offsets of the answered frames were never committed"
            time.sleep(0.2)

        broker.stop()
        time.sleep(3)  # the worker notices: connections refused, group coordinator gone
        broker.start()
        after = Stream(broker.bootstrap, names.frames, "after", rate=15).start()
        r = Reader(broker.bootstrap, names.verdicts)
        try:
            time.sleep(4)
            r.read(lambda recs: len(recs) > 0, 120, "first verdict after the restart")
        finally:
            sent_after = after.stop()
        recs = r.read(have_frames(set(sent_after)), 120, "a verdict for every frame after the restart")
        r.close()
        t = tally("test_broker_restart_worker_reconnects_without_help", sent_after, recs)
        assert t["lost"] == 0 and after.errors == 0
        # the verdicts topic kept what was published before the restart, and the committed
        # offsets held: no frame from before the restart was answered again after it
        everything = Reader(broker.bootstrap, names.verdicts)
        recs = everything.read(have_frames(set(sent_before) | set(sent_after)), 60, "all verdicts")
        everything.close()
        ids = [Verdict.from_bytes(rec.value).frame_id for rec in recs]
        assert not {i for i in ids if i in set(sent_before) and ids.count(i) > 1}
        assert w.proc.poll() is None
        assert w.stop() == 0
    finally:
        broker.close()


# ---------------------------------------------------------------------------------------------
# bad checkpoints
# ---------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this would create ``marker``: proof that a pickle named as weights never runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _bad_checkpoints(good: Path, tmp: Path, marker: Path) -> dict[str, tuple[Path, str | None]]:
    """reason -> (checkpoint dir, manifest sha256 to announce; None: the real one)."""
    from inspector.support.hashing import sha256_file

    out: dict[str, tuple[Path, str | None]] = {}

    def copy(tag: str, **manifest_changes) -> Path:
        d = tmp / tag
        shutil.copytree(good, d)
        mf = json.loads((d / "manifest.json").read_text())
        mf.update(version=f"bad-{tag}", **manifest_changes)
        (d / "manifest.json").write_text(json.dumps(mf))
        return d

    d = copy("truncated")
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    out["truncated"] = (d, None)

    d = copy("flipped")
    data = bytearray((d / "model.safetensors").read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0xFF
    (d / "model.safetensors").write_bytes(bytes(data))
    out["flipped"] = (d, None)

    out["wrong_weights_hash"] = (copy("wronghash", weights_sha256="0" * 64), None)

    d = copy("pickle")  # a pickle named as weights, its hash put in the manifest by the attacker
    (d / "model.safetensors").write_bytes(pickle.dumps({"weights": _Payload(marker)}))
    mf = json.loads((d / "manifest.json").read_text())
    mf["weights_sha256"] = sha256_file(d / "model.safetensors")
    (d / "manifest.json").write_text(json.dumps(mf))
    out["pickle"] = (d, None)

    out["unknown_teacher"] = (copy("teacher", teacher="resnet9000"), None)
    out["manifest_hash"] = (copy("pinned"), "f" * 64)  # the update pins another manifest
    return out


EXPECTED_REASON = {
    "truncated": "weights_hash",
    "flipped": "weights_hash",
    "wrong_weights_hash": "weights_hash",
    "pickle": "weights_unreadable",
    "unknown_teacher": "teacher",
    "manifest_hash": "manifest_hash",
}


def test_bad_checkpoints_are_refused_and_the_live_model_keeps_serving(workers, names, reader, tiny_checkpoint,
                                                                     kafka_bootstrap, tmp_path):
    """Truncated weights, flipped bytes, a wrong hash in the manifest, a pickle named as weights, a
    manifest for an unknown teacher, a manifest that is not the announced one: each is refused
    (log event ``model_refused`` with its reason, ``inspector_model_refused_total{reason}``), the
    pickle is never unpickled, and the live version answers every frame throughout."""
    model, v1 = manifest_name(tiny_checkpoint), manifest_version(tiny_checkpoint)
    marker = tmp_path / "UNPICKLED"
    bad = _bad_checkpoints(tiny_checkpoint, tmp_path / "bad", marker)
    w = workers("c-1")
    w.wait_ready()
    vr = reader(names.verdicts)
    stream = Stream(kafka_bootstrap, names.frames, "ck", rate=8).start()
    ctrl = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        for i, (case, (path, pinned)) in enumerate(bad.items(), start=1):
            update = update_for_checkpoint(path)
            if pinned is not None:
                update = update.model_copy(update={"manifest_sha256": pinned})
            publish_update(ctrl, names.models, update)
            assert w.wait_metric("inspector_model_refused_total", i, model=model) == i, case
            assert w.metric("inspector_model_refused_total", model=model, reason=EXPECTED_REASON[case]) >= 1, case
    finally:
        sent = stream.stop()
        ctrl.close()
    recs = vr.read(have_frames(set(sent)), 90, "a verdict for every frame")
    t = tally("test_bad_checkpoints_are_refused_and_the_live_model_keeps_serving", sent, recs)
    assert t["lost"] == 0 and t["duplicates"] == 0
    assert Counter(v.model_version for v in verdicts_of(recs)) == Counter({v1: len(recs)})
    assert w.metric("inspector_model_info", model=model, version=v1) == 1
    assert not marker.exists(), "a pickle named as weights was unpickled"
    refused = [json.loads(x) for x in w.logs().splitlines() if '"model_refused"' in x]
    assert sorted(e["reason"] for e in refused) == sorted(EXPECTED_REASON.values())
    assert all(e["serving"] == v1 for e in refused)
    assert w.stop() == 0
    # a frame sent now still gets the live model (the worker never swapped in a bad one)
    w2 = workers("c-2")
    p = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        send_frame(p, names.frames, jpeg(1), camera="cam-z", frame_id="after-restart")
    finally:
        p.close()
    recs = vr.read(have_frames({"after-restart"}), 90, "verdict after restart")
    last = [v for v in verdicts_of(recs) if v.frame_id == "after-restart"]
    assert last[0].model_version == v1
    assert w2.stop() == 0
