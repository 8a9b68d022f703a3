"""The real services behave as the product needs: Kafka records, commits, durability and retention,
Redis TTL/outage, kcat (librdkafka)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from devtools.localstack import LOCAL_FRAMES_RETENTION_MS, LocalBroker, ensure_topics, free_port
from inspector.contracts.wire import FRAME_ID_HEADER
from tests.integration.harness import kcat

REPO = Path(__file__).resolve().parents[2]


def _read_all(bootstrap: str, topic: str, expected: int, timeout: float = 15.0) -> list:
    """Group-less read of every partition of ``topic`` from the beginning."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", consumer_timeout_ms=int(timeout * 1000),
    )
    try:
        deadline = time.monotonic() + timeout
        parts = set()
        while not parts and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                time.sleep(0.1)
        assert parts, f"topic {topic} never appeared"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list = []
        while len(out) < expected and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                out.extend(recs)
        return out
    finally:
        consumer.close()


def _producer(bootstrap: str) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
        request_timeout_ms=10000, max_block_ms=10000,
    )


# --------------------------------------------------------------------------------------------
# Kafka


def test_produce_consume_keys_headers_idempotent_acks_all(kafka_bootstrap, unique_topic):
    topic = unique_topic("infra", partitions=3)
    producer = _producer(kafka_bootstrap)
    sent = []
    try:
        for i in range(30):
            key = f"cam-{i % 4}".encode()
            value = os.urandom(1000 + i * 100)  # binary, varied sizes
            headers = [(FRAME_ID_HEADER, f"f{i}".encode()), ("seq", str(i).encode()), ("empty", b"")]
            md = producer.send(topic, key=key, value=value, headers=headers).get(timeout=10)
            assert md.topic == topic and md.offset >= 0
            sent.append((key, value, headers, md.partition))
    finally:
        producer.close(timeout=5)

    got = _read_all(kafka_bootstrap, topic, len(sent))
    assert len(got) == len(sent)
    by_frame = {dict(r.headers)[FRAME_ID_HEADER]: r for r in got}
    per_key_partition = defaultdict(set)
    for key, value, headers, partition in sent:
        rec = by_frame[dict(headers)[FRAME_ID_HEADER]]
        assert rec.key == key and rec.value == value
        assert rec.headers == headers
        assert rec.partition == partition
        per_key_partition[key].add(rec.partition)
    # same key -> same partition, and order within a key is the send order
    assert all(len(p) == 1 for p in per_key_partition.values())
    for key in per_key_partition:
        seqs = [int(dict(r.headers)["seq"]) for r in sorted(got, key=lambda r: r.offset) if r.key == key]
        assert seqs == sorted(seqs)


def test_manual_commit_respected_across_consumer_restart(
    kafka_bootstrap, unique_topic, kafka_group_settings
):
    topic = unique_topic("commit", partitions=1)
    group = f"g-{uuid.uuid4().hex[:8]}"
    producer = _producer(kafka_bootstrap)
    for i in range(10):
        producer.send(topic, key=b"k", value=str(i).encode())
    producer.flush(timeout=10)
    producer.close(timeout=5)

    def consumer() -> KafkaConsumer:
        c = KafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=4, **kafka_group_settings,
        )
        c.subscribe([topic])
        return c

    def poll_until(c: KafkaConsumer, n: int, timeout: float = 20.0) -> list:
        out: list = []
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500, max_records=n - len(out)).values():
                out.extend(recs)
        return out

    tp = TopicPartition(topic, 0)
    first = consumer()
    try:
        got = poll_until(first, 6)
        assert [r.value for r in got] == [str(i).encode() for i in range(6)]
        first.commit({tp: OffsetAndMetadata(4, "", -1)})  # processed 0..3 only
        assert first.committed(tp) == 4
    finally:
        first.close(autocommit=False)

    second = consumer()
    try:
        got = poll_until(second, 6)
        assert [r.value for r in got] == [str(i).encode() for i in range(4, 10)]
    finally:
        second.close(autocommit=False)


# --------------------------------------------------------------------------------------------
# Redis


def test_redis_set_get_with_ttl(redis_url):
    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        key = f"test:{uuid.uuid4().hex}"
        blob = os.urandom(200_000)
        assert client.set(key, blob, px=400)
        assert client.get(key) == blob
        assert 0 < client.pttl(key) <= 400
        assert client.set(key + ":long", b"x", ex=60) and 55 <= client.ttl(key + ":long") <= 60
        deadline = time.monotonic() + 5
        while client.exists(key) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get(key) is None
        client.delete(key + ":long")
    finally:
        client.close()


def test_redis_stop_connection_error_start_works_again(redis_server):
    client = redis.Redis.from_url(
        redis_server.url, socket_timeout=1, socket_connect_timeout=1, retry_on_timeout=False
    )
    try:
        client.set("k", "v")
        assert client.get("k") == b"v"
        url = redis_server.url
        redis_server.stop()
        with pytest.raises(redis.ConnectionError):
            client.ping()
        with pytest.raises(redis.ConnectionError):
            client.get("k")
        redis_server.start()
        assert redis_server.url == url  # same address: clients just reconnect
        assert client.ping()
        assert client.get("k") is None  # no persistence
        client.set("k", "v2")
        assert client.get("k") == b"v2"
    finally:
        client.close()


def test_local_redis_is_loopback_lru_without_persistence(redis_server, services_backend):
    if services_backend == "docker":
        pytest.skip("container Redis keeps the image's configuration")
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    try:
        cfg = client.config_get("*")
        assert cfg["bind"] == "127.0.0.1"
        assert cfg["maxmemory-policy"] == "allkeys-lru" and int(cfg["maxmemory"]) > 0
        assert cfg["save"] == "" and cfg["appendonly"] == "no"
    finally:
        client.close()


# --------------------------------------------------------------------------------------------
# kcat: a non-Python Kafka client (librdkafka)

def _require_kcat(bootstrap: str) -> None:
    """kcat is part of the install (deploy/local/install.sh): missing or unable to talk to the
    broker is a failure, never a skip."""
    assert shutil.which("kcat"), "kcat is not installed (deploy/local/install.sh installs it: apt-get install kcat)"
    probe = kcat("-b", bootstrap, "-L", "-m", "5")
    assert probe.returncode == 0, f"kcat cannot reach {bootstrap}: {probe.stderr.decode(errors='replace')[-500:]}"


def test_kcat_round_trip(kafka_bootstrap, unique_topic):
    _require_kcat(kafka_bootstrap)

    # kcat -P -> kafka-python
    topic_in = unique_topic("kcat-in", partitions=1)
    produced = kcat("-b", kafka_bootstrap, "-P", "-t", topic_in, "-K", ":",
                     "-H", "source=kcat", stdin=b"cam-1:hello\ncam-2:world\n")
    assert produced.returncode == 0, produced.stderr
    got = _read_all(kafka_bootstrap, topic_in, 2)
    assert [(r.key, r.value) for r in got] == [(b"cam-1", b"hello"), (b"cam-2", b"world")]
    assert all(("source", b"kcat") in r.headers for r in got)

    # kafka-python -> kcat -C -e
    topic_out = unique_topic("kcat-out", partitions=1)
    producer = _producer(kafka_bootstrap)
    for i in range(3):
        producer.send(topic_out, key=f"k{i}".encode(), value=f"v{i}".encode(),
                      headers=[(FRAME_ID_HEADER, f"f{i}".encode())])
    producer.flush(timeout=10)
    producer.close(timeout=5)
    consumed = kcat("-b", kafka_bootstrap, "-C", "-t", topic_out, "-o", "beginning", "-e", "-q",
                     "-f", "%k\t%s\t%h\n")
    assert consumed.returncode == 0, consumed.stderr
    lines = consumed.stdout.decode().splitlines()
    assert lines == [f"k{i}\tv{i}\t{FRAME_ID_HEADER}=f{i}" for i in range(3)]


# --------------------------------------------------------------------------------------------
# deploy/local/services


def test_services_script_start_status_env_stop(tmp_path):
    script = REPO / "deploy" / "local" / "services"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "INSPECTOR_LOCAL_SERVICES_DIR": str(tmp_path / "run"),
        "INSPECTOR_LOCAL_KAFKA_PORT": str(free_port()),
        "INSPECTOR_LOCAL_REDIS_PORT": str(free_port()),
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(script), *args], env=env, capture_output=True, text=True,
                              timeout=60, check=False)

    try:
        started = run("start")
        assert started.returncode == 0, started.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines()
        )
        assert exports == {
            "INSPECTOR_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{env['INSPECTOR_LOCAL_KAFKA_PORT']}",
            "INSPECTOR_REDIS_URL": f"redis://127.0.0.1:{env['INSPECTOR_LOCAL_REDIS_PORT']}/0",
        }
        again = run("start")  # idempotent: same services, same output
        assert again.returncode == 0 and again.stdout == started.stdout, again.stderr
        assert "already_running" in again.stderr
        assert run("env").stdout == started.stdout
        status = run("status")
        assert status.returncode == 0 and status.stdout.count("answering") == 2, status.stdout

        client = redis.Redis.from_url(exports["INSPECTOR_REDIS_URL"], socket_timeout=2)
        assert client.ping()
        client.close()
        bootstrap = exports["INSPECTOR_KAFKA_BOOTSTRAP_SERVERS"]
        producer = _producer(bootstrap)
        producer.send("script-check", value=b"x").get(timeout=10)
        producer.close(timeout=5)
        # `start` created the service's topics, frames with its retention
        assert _topic_config(bootstrap, "frames")["retention.ms"] == str(LOCAL_FRAMES_RETENTION_MS)
        assert _topic_config(bootstrap, "inspector.models")["cleanup.policy"] == "compact"

        restarted = run("restart")  # the broker keeps its log directory: topics and records stay
        assert restarted.returncode == 0, restarted.stderr
        assert restarted.stdout == started.stdout
        assert [r.value for r in _read_all(bootstrap, "script-check", 1)] == [b"x"]
    finally:
        stopped = run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert run("status").returncode == 3
    assert run("env").returncode == 3
    assert run("stop").returncode == 0  # idempotent


def test_services_script_reports_missing_java_jars_and_redis(tmp_path):
    script = REPO / "deploy" / "local" / "services"
    base = {**os.environ, "PYTHON": sys.executable, "INSPECTOR_LOCAL_SERVICES_DIR": str(tmp_path / "run")}

    def start(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(script), "start"], env={**base, **env}, capture_output=True,
                              text=True, timeout=60, check=False)

    empty = tmp_path / "no-jars"
    empty.mkdir()
    result = start(INSPECTOR_KAFKA_JARS=str(empty))
    assert result.returncode == 1 and result.stdout == ""
    assert "kafka_2.13" in result.stderr and "apt-get install" in result.stderr

    # no Java anywhere: JAVA_HOME unset, PATH holding only what the wrapper script runs
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {k: v for k, v in base.items() if k != "JAVA_HOME"}
    result = subprocess.run([str(script), "start"], env={**env, "PATH": str(bin_dir)},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1 and "Java >= 17" in result.stderr and "openjdk-17" in result.stderr

    result = start(INSPECTOR_REDIS_SERVER_BIN=str(tmp_path / "no-redis"))
    assert result.returncode == 1 and "apt-get install" in result.stderr
    assert not (tmp_path / "run" / "state.json").exists()  # nothing was started


# --------------------------------------------------------------------------------------------
# the local broker is Apache Kafka: durable across restarts, retention applies


def _topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        return {name: entry["value"] for name, entry in described["topic"][topic].items()}
    finally:
        admin.close()


def test_local_broker_restart_keeps_topics_records_and_committed_offsets(tmp_path, kafka_group_settings):
    """A private broker (this test stops it): SIGTERM, start again, everything is still there;
    then SIGKILL, start again (log recovery), and it still is."""
    from kafka.admin import KafkaAdminClient, NewTopic

    broker = LocalBroker(run_dir=tmp_path / "broker").start()
    try:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic("durable", 2, 1)])
        admin.close()
        producer = _producer(broker.bootstrap)
        for i in range(20):
            producer.send("durable", key=f"k{i % 3}".encode(), value=str(i).encode())
        producer.flush(timeout=10)
        producer.close(timeout=5)
        consumer = KafkaConsumer(
            bootstrap_servers=broker.bootstrap, group_id="durable-group", enable_auto_commit=False,
            auto_offset_reset="earliest", **kafka_group_settings,
        )
        consumer.subscribe(["durable"])
        seen = 0
        deadline = time.monotonic() + 30
        while seen < 20 and time.monotonic() < deadline:
            seen += sum(len(r) for r in consumer.poll(timeout_ms=500).values())
        consumer.commit()
        committed = {tp.partition: consumer.committed(tp) for tp in consumer.assignment()}
        consumer.close(autocommit=False)
        assert seen == 20 and sum(committed.values()) == 20

        for how in ("sigterm", "sigkill"):
            if how == "sigterm":
                broker.stop()
            else:
                os.kill(broker.pid, 9)
                time.sleep(1)
                broker.stop()  # reaps the process
            broker.start()
            assert sorted(int(r.value) for r in _read_all(broker.bootstrap, "durable", 20)) == list(range(20))
            admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
            try:
                offsets = admin.list_group_offsets("durable-group")["durable-group"]
                assert {tp.partition: om.offset for tp, om in offsets.items()} == committed, how
                assert admin.describe_groups(["durable-group"])  # answers
            finally:
                admin.close()
    finally:
        broker.close()


def test_retention_on_frames_deletes_old_segments(kafka_bootstrap, services_backend):
    """The frames topic is created with a retention (ensure_topics, as `deploy/local/services
    start` and the demo do) and the broker applies it: old segments go, the log start moves."""
    if services_backend != "local":
        pytest.skip("needs the local broker's 5 s retention check interval (Kafka's default is 5 min)")
    suffix = uuid.uuid4().hex[:8]
    frames = f"frames.retention-{suffix}"
    ensure_topics(kafka_bootstrap, frames=frames, verdicts=f"verdicts.r-{suffix}", dlq=f"dlq.r-{suffix}",
                  normal=f"normal.r-{suffix}", models=f"models.r-{suffix}", partitions=1,
                  frames_retention_ms=3000, frames_segment_ms=1000)
    assert _topic_config(kafka_bootstrap, frames)["retention.ms"] == "3000"
    producer = _producer(kafka_bootstrap)
    for i in range(10):
        producer.send(frames, value=b"old %d" % i)
    producer.flush(timeout=10)
    tp = TopicPartition(frames, 0)
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        assert consumer.beginning_offsets([tp])[tp] == 0
        deadline = time.monotonic() + 60
        start = 0
        while start < 10 and time.monotonic() < deadline:
            time.sleep(1.5)
            # a new record rolls the segment once segment.ms has passed; the old one then expires
            producer.send(frames, value=b"new").get(timeout=10)
            start = consumer.beginning_offsets([tp])[tp]
        assert start >= 10, f"log start offset still {start}: retention did not apply"
    finally:
        consumer.close()
        producer.close(timeout=5)
