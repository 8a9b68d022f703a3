"""The private parts of kafka-python the worker uses, in one place.

kafka-python (3.0.x) has no public API for three things the worker needs:

- committing from inside a rebalance callback: the callback runs on the consumer's I/O loop, where
  a blocking ``consumer.commit`` cannot; the coordinator's awaitable commit (what kafka-python
  itself uses for its pre-rebalance auto-commit) can;
- waiting on that loop without blocking it (heartbeats keep going while a revoke drains);
- telling that an idempotent producer entered its fatal state (it then fails every later send).

Each accessor answers None (or False, or "") when the internal is missing, so another version
degrades to the fallback its caller has instead of crashing; ``tests/unit/test_kafka_internals.py``
fails loudly when the installed kafka-python no longer has them as expected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

#: ``await commit({TopicPartition: OffsetAndMetadata}, timeout_ms=...)``: raises when the commit failed.
RebalanceCommit = Callable[..., Awaitable[None]]
#: ``await sleep(seconds)`` on the consumer's I/O loop.
LoopSleep = Callable[[float], Awaitable[Any]]


def _coordinator(consumer: KafkaConsumer | None) -> Any:
    return getattr(consumer, "_coordinator", None)


def _transaction_manager(producer: KafkaProducer) -> Any:
    return getattr(producer, "_transaction_manager", None)


def rebalance_commit(consumer: KafkaConsumer | None) -> RebalanceCommit | None:
    """The consumer's awaitable synchronous commit, for use on its I/O loop; None if absent."""
    return getattr(_coordinator(consumer), "_commit_offsets_sync_async", None)


def loop_sleep(consumer: KafkaConsumer | None) -> LoopSleep | None:
    """An awaitable sleep on the consumer's I/O loop; None if absent."""
    return getattr(getattr(_coordinator(consumer), "_net", None), "sleep", None)


def producer_failed_fatally(producer: KafkaProducer) -> bool:
    """Whether the producer's idempotence state is fatal (False when it cannot be told)."""
    tm = _transaction_manager(producer)
    try:
        return bool(tm is not None and tm.has_fatal_error())
    except Exception:  # noqa: BLE001 - an internal that changed shape: not fatal as far as we know
        return False


def producer_last_error(producer: KafkaProducer) -> object:
    """The error that made the producer's state fatal ("" when it cannot be told)."""
    return getattr(_transaction_manager(producer), "last_error", "")
