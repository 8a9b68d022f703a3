"""Real Kafka + Redis for integration tests.

Backend, chosen once per session ($INSPECTOR_TEST_SERVICES = auto | docker | local | external):
* ``docker``   -- testcontainers' ``KafkaContainer`` / ``RedisContainer`` (auto when ``docker info`` works);
* ``local``    -- :mod:`devtools.localstack`: Apache Kafka (one KRaft node, jars from Maven Central)
  + redis-server on 127.0.0.1: one broker for the whole session;
* ``external`` -- already running services named by $INSPECTOR_TEST_KAFKA_BOOTSTRAP_SERVERS and
  $INSPECTOR_TEST_REDIS_URL (auto when both are set); ``redis_server`` still starts its own.
If no backend can start (Java, Kafka's jars or redis-server missing), the tests FAIL with install hints
(they are never skipped: CI installs both).

Fixtures: ``kafka_bootstrap`` / ``redis_url`` (session), ``redis_server`` (function: a private
Redis a test may ``stop()`` / ``start()`` on the same port), ``unique_topic`` (factory),
``kafka_group_settings`` (short consumer-group sessions), and the worker
harness's ``names`` (fresh topics + group), ``worker_env``, ``workers`` (factory of `inspector serve`
subprocesses), ``producer`` and ``reader`` (see ``harness.py``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.localstack import (
    FAST_GROUP_SETTINGS,
    LocalBroker,
    LocalRedis,
    LocalServiceError,
    free_port,
    wait_for_redis,
)
from tests.integration.harness import Names, Reader, Worker, create_topics

BACKEND_ENV = "INSPECTOR_TEST_SERVICES"
EXTERNAL_KAFKA_ENV = "INSPECTOR_TEST_KAFKA_BOOTSTRAP_SERVERS"
EXTERNAL_REDIS_ENV = "INSPECTOR_TEST_REDIS_URL"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs a real Kafka broker and Redis")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.integration)


# --------------------------------------------------------------------------------------------
# backend selection


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(
            ["docker", "info"], capture_output=True, timeout=10, check=False
        ).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def services_backend() -> str:
    """``docker``, ``local`` or ``external`` (see module docstring)."""
    wanted = os.environ.get(BACKEND_ENV, "auto").strip().lower()
    if wanted not in ("auto", "docker", "local", "external"):
        pytest.fail(f"{BACKEND_ENV}={wanted!r}: expected auto, docker, local or external")
    if wanted == "auto":
        if os.environ.get(EXTERNAL_KAFKA_ENV) and os.environ.get(EXTERNAL_REDIS_ENV):
            return "external"
        return "docker" if _docker_available() else "local"
    if wanted == "docker" and not _docker_available():
        pytest.fail(f"{BACKEND_ENV}=docker but `docker info` fails: no reachable Docker engine")
    if wanted == "external" and not (
        os.environ.get(EXTERNAL_KAFKA_ENV) and os.environ.get(EXTERNAL_REDIS_ENV)
    ):
        pytest.fail(f"{BACKEND_ENV}=external needs {EXTERNAL_KAFKA_ENV} and {EXTERNAL_REDIS_ENV}")
    return wanted


def _fail_local(what: str, exc: Exception) -> None:
    pytest.fail(
        f"cannot start a local {what} for the integration tests (no Docker engine either): {exc}",
        pytrace=False,
    )


def _kafka_container() -> Any:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # older testcontainers
        from testcontainers.kafka import KafkaContainer
    return KafkaContainer()


def _redis_container(host_port: int | None = None) -> Any:
    try:
        from testcontainers.community.redis import RedisContainer
    except ImportError:
        from testcontainers.redis import RedisContainer
    container = RedisContainer()
    if host_port is not None:
        container.with_bind_ports(6379, ("127.0.0.1", host_port))
    return container


# --------------------------------------------------------------------------------------------
# Kafka


@pytest.fixture(scope="session")
def kafka_bootstrap(services_backend: str) -> Iterator[str]:
    """``host:port`` of a real Apache Kafka broker for the whole session."""
    if services_backend == "external":
        yield os.environ[EXTERNAL_KAFKA_ENV]
    elif services_backend == "docker":
        with _kafka_container() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        broker = LocalBroker(startup_timeout=90.0)
        try:
            broker.start()
        except LocalServiceError as exc:
            broker.close()
            _fail_local("Kafka broker", exc)
        try:
            yield broker.bootstrap
        finally:
            broker.close()


@pytest.fixture(scope="session")
def kafka_group_settings() -> dict[str, int]:
    """Pass to every KafkaConsumer that joins a group: a closed or killed member's partitions move
    after 6 s instead of 45 s."""
    return dict(FAST_GROUP_SETTINGS)


@pytest.fixture
def unique_topic(
    request: pytest.FixtureRequest, kafka_bootstrap: str
) -> Iterator[Callable[..., str]]:
    """``unique_topic(prefix="t", partitions=1) -> name``: a fresh topic name for this test,
    created with ``partitions`` partitions (``partitions=None``: only the name, no creation)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    slug = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:40] or "test"
    admins: list[Any] = []

    def make(prefix: str = "t", partitions: int | None = 1) -> str:
        name = f"{prefix}.{slug}.{uuid.uuid4().hex[:10]}"
        if partitions is not None:
            if not admins:
                admins.append(
                    KafkaAdminClient(
                        bootstrap_servers=kafka_bootstrap,
                        client_id="tests-admin",
                        request_timeout_ms=10000,
                    )
                )
            admins[0].create_topics([NewTopic(name, partitions, 1)], timeout_ms=10000)
            _wait_topic(kafka_bootstrap, name, partitions)
        return name

    yield make
    for admin in admins:
        admin.close()


def _wait_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 10.0) -> None:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, allow_auto_create_topics=False)
    try:
        deadline = time.monotonic() + timeout
        while len(consumer.partitions_for_topic(topic) or ()) < partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} not visible in metadata after {timeout} s")
            time.sleep(0.1)
    finally:
        consumer.close()


# --------------------------------------------------------------------------------------------
# Redis


@pytest.fixture(scope="session")
def redis_url(services_backend: str) -> Iterator[str]:
    """``redis://host:port/0`` of a real Redis for the whole session (shared: use unique keys)."""
    if services_backend == "external":
        yield os.environ[EXTERNAL_REDIS_ENV]
    elif services_backend == "docker":
        with _redis_container() as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
    else:
        server = LocalRedis()
        try:
            server.start()
        except LocalServiceError as exc:
            server.close()
            _fail_local("redis-server", exc)
        try:
            yield server.url
        finally:
            server.close()


class ContainerRedis:
    """A Redis container with :class:`~devtools.localstack.LocalRedis`'s interface
    (``url``, ``port``, ``start()``, ``stop()``, ``restart()``); the host port is fixed so
    that ``stop()`` / ``start()`` keep the same address."""

    def __init__(self) -> None:
        self.port = free_port()
        self._container = _redis_container(self.port)
        self._started = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> ContainerRedis:
        if not self._started:
            self._container.start()
            self._started = True
        else:
            self._container.get_wrapped_container().start()
        wait_for_redis(self.url, timeout=30.0)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._started:
            self._container.get_wrapped_container().stop(timeout=int(timeout))

    def restart(self) -> ContainerRedis:
        self.stop()
        return self.start()

    def close(self) -> None:
        if self._started:
            self._container.stop()
            self._started = False


@pytest.fixture
def redis_server(services_backend: str) -> Iterator[Any]:
    """A private Redis for one test; ``stop()`` / ``start()`` keep the same ``url``."""
    if services_backend == "docker":
        server: Any = ContainerRedis()
    else:
        server = LocalRedis()
    try:
        server.start()
    except LocalServiceError as exc:
        server.close()
        _fail_local("redis-server", exc)
    try:
        yield server
    finally:
        server.close()


# --------------------------------------------------------------------------------------------
# the worker harness (tests/integration/harness.py): topics, worker subprocesses, producer, reader


@pytest.fixture()
def names(kafka_bootstrap) -> Names:
    n = Names()
    create_topics(kafka_bootstrap, n)
    return n


@pytest.fixture(scope="session")
def onnx_cache_dir(tmp_path_factory) -> Path:
    """One ONNX graph cache for every worker of the session (a restart reads it, as in production)."""
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture()
def worker_env(kafka_bootstrap, redis_url, tiny_checkpoint, names, tmp_path, onnx_cache_dir) -> dict[str, str]:
    return {
        "INSPECTOR_ONNX_CACHE_DIR": str(onnx_cache_dir),
        "INSPECTOR_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "INSPECTOR_REDIS_URL": redis_url,
        "INSPECTOR_CHECKPOINT": str(tiny_checkpoint),
        "INSPECTOR_FRAMES_TOPIC": names.frames,
        "INSPECTOR_VERDICTS_TOPIC": names.verdicts,
        "INSPECTOR_DLQ_TOPIC": names.dlq,
        "INSPECTOR_MODELS_TOPIC": names.models,
        "INSPECTOR_GROUP_ID": names.group,
        "INSPECTOR_MODELS_DIR": str(tmp_path),
    }


@pytest.fixture()
def workers(tmp_path, worker_env):
    """Factory of worker subprocesses; all are stopped (logs shown on failure) at teardown."""
    started: list[Worker] = []

    def make(name: str = "w1", **env: str) -> Worker:
        w = Worker(tmp_path, {**worker_env, **env}, name).start()
        started.append(w)
        return w

    yield make
    for w in started:
        w.kill()  # those still running; closes every log


@pytest.fixture()
def producer(kafka_bootstrap):
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=0)
    yield p
    p.close(timeout=5)


@pytest.fixture()
def reader(kafka_bootstrap):
    opened: list[Reader] = []

    def make(topic: str) -> Reader:
        r = Reader(kafka_bootstrap, topic)
        opened.append(r)
        return r

    yield make
    for r in opened:
        r.close()
