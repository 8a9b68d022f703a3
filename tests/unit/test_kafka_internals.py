"""The kafka-python internals behind inspector.runtime.kafka_internals are still there.

The worker degrades quietly when one goes missing (a rebalance commit that may land after the
JoinGroup, a drain that blocks the I/O loop, a producer that is never renewed): this test is what
says so loudly, on the installed kafka-python, with real client objects and no broker.
"""

from __future__ import annotations

import inspect

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.coordinator.consumer import ConsumerCoordinator
from kafka.producer.transaction_manager import TransactionManager

from inspector.runtime import kafka_internals as ki

NOWHERE = "127.0.0.1:9"  # discard port: the clients are built, never connected
API = (3, 0)  # given, so that construction does not probe a broker


@pytest.fixture
def consumer():
    c = KafkaConsumer(bootstrap_servers=NOWHERE, api_version=API, group_id="kafka-internals-test",
                      enable_auto_commit=False)
    yield c
    c.close(autocommit=False)


@pytest.fixture
def producer():
    p = KafkaProducer(bootstrap_servers=NOWHERE, api_version=API, acks="all", enable_idempotence=True)
    yield p
    p.close(timeout=1)


def _params(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values()]


def test_the_coordinator_commits_awaitably(consumer):
    assert isinstance(getattr(consumer, "_coordinator", None), ConsumerCoordinator)
    commit = ki.rebalance_commit(consumer)
    assert commit is not None, "kafka-python lost ConsumerCoordinator._commit_offsets_sync_async"
    assert inspect.iscoroutinefunction(commit)
    assert _params(commit)[:2] == ["offsets", "timeout_ms"]


def test_the_io_loop_sleeps_and_runs_the_commit(consumer):
    sleep = ki.loop_sleep(consumer)
    assert sleep is not None, "kafka-python lost the coordinator's _net.sleep"
    assert _params(sleep) == ["delay"]
    commit = ki.rebalance_commit(consumer)

    async def drain_then_commit() -> str:  # what Worker._on_revoked does on the loop
        await sleep(0.01)
        await commit({}, timeout_ms=1_000)  # nothing to commit: no broker needed
        return "done"

    assert consumer._coordinator._net.run(drain_then_commit) == "done"


def test_the_producer_reports_its_idempotence_state(producer):
    assert isinstance(getattr(producer, "_transaction_manager", None), TransactionManager)
    assert callable(TransactionManager.has_fatal_error) and _params(TransactionManager.has_fatal_error) == ["self"]
    assert isinstance(inspect.getattr_static(TransactionManager, "last_error"), property)
    assert ki.producer_failed_fatally(producer) is False
    assert ki.producer_last_error(producer) is None


def test_missing_internals_degrade_instead_of_raising():
    class Bare:
        pass

    assert ki.rebalance_commit(None) is None and ki.rebalance_commit(Bare()) is None
    assert ki.loop_sleep(None) is None and ki.loop_sleep(Bare()) is None
    assert ki.producer_failed_fatally(Bare()) is False
    assert ki.producer_last_error(Bare()) == ""

    class Broken:
        class _transaction_manager:  # noqa: N801 - the shape of a kafka-python that changed
            @staticmethod
            def has_fatal_error() -> bool:
                raise AttributeError("_current_state")

    assert ki.producer_failed_fatally(Broken()) is False
