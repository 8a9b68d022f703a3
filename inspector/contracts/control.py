"""The control topic (default ``inspector.models``): compacted, key = model name, value = a
:class:`~inspector.contracts.wire.ModelUpdate`. The trainer publishes on it and the workers follow
it; both make sure it exists, so this lives below both."""

from __future__ import annotations

from typing import Any

import structlog

from inspector.contracts.wire import ModelUpdate


def ensure_control_topic(kafka: dict[str, Any], client_id: str, topic: str) -> None:
    """Create the compacted control topic if it is missing (best effort: ops may own it).

    ``kafka`` are the connection kwargs (``Settings.kafka_common()`` of either side)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    log = structlog.get_logger("inspector.contracts.control")
    try:
        admin = KafkaAdminClient(**kafka, client_id=client_id)
    except Exception as exc:  # noqa: BLE001
        log.warning("control_topic_check_failed", error=type(exc).__name__)
        return
    try:
        if topic not in set(admin.list_topics()):
            admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
            log.info("control_topic_created", topic=topic)
    except Exception as exc:  # noqa: BLE001 - exists already / not allowed: fine
        log.info("control_topic_not_created", topic=topic, error=type(exc).__name__)
    finally:
        admin.close()


def publish_update(producer: Any, topic: str, update: ModelUpdate, timeout_s: float = 10.0) -> None:
    """Publish an update to the control topic (key = model name) and wait for the ack."""
    producer.send(topic, key=update.name.encode(), value=update.to_bytes()).get(timeout=timeout_s)
