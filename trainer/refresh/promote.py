"""Promotion: a checkpoint becomes the live version of its model and the workers are told.

The version is written atomically into the models repository, the ``live`` pointer is swapped,
and a ``ModelUpdate`` (signed when a key is configured, its statement kept beside the checkpoint)
is published on the workers' control topic with acks=all, then recorded in ``published.json``. A
run that died between the swap and the publish is caught up by the next one
(``republish_if_needed``). ``adopt`` makes an existing checkpoint live: a first deployment, or a
rollback, marked and signed as one when a newer checkpoint of the model exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from inspector.contracts import control
from inspector.model.checkpoint import CheckpointError, Manifest, read_manifest, read_weights
from inspector.model.repository import ModelRepository
from inspector.model.signing import sign, write_statement

from ..settings import TrainerSettings
from ..store import check_model_name

__all__ = ["adopt", "promote", "publish", "republish_if_needed"]


def _log() -> Any:
    return structlog.get_logger("trainer.refresh")


def publish(settings: TrainerSettings, ckpt: Path) -> dict[str, Any]:
    """Sign ``ckpt``'s update (when a key is configured), keep the statement beside it, announce it on
    the control topic (key = model name, acks=all) and record it. Returns the record."""
    from kafka import KafkaProducer

    repo = ModelRepository(settings.checkpoints_dir)
    ckpt = ckpt.resolve()
    update = repo.update_for(ckpt, relative=settings.publish_relative)
    key = settings.signing_private_key()
    if key is not None:
        update = sign(update, key)
        write_statement(ckpt, update)
    else:
        _log().warning("model_update_unsigned", model=update.name, version=update.version,
                       hint="set TRAINER_SIGNING_KEY (trainer keygen) so that workers can verify who made it")
    control.ensure_control_topic(settings.kafka_common(), f"{settings.kafka_client_id}-admin", settings.models_topic)
    producer = KafkaProducer(**settings.kafka_common(), client_id=f"{settings.kafka_client_id}-refresh",
                             acks="all", retries=5, request_timeout_ms=int(settings.publish_timeout_s * 1000))
    try:
        control.publish_update(producer, settings.models_topic, update, timeout_s=settings.publish_timeout_s)
    finally:
        producer.close(timeout=5)
    record = repo.write_published(update, settings.models_topic)
    _log().info("model_update_published", model=update.name, version=update.version, topic=settings.models_topic,
                checkpoint=update.checkpoint, rollback=update.rollback,
                signed_by=update.signature.key_id if update.signature else None)
    return record.model_dump(mode="json")


def republish_if_needed(settings: TrainerSettings, model: str, live: Path | None) -> bool:
    """A run killed between the pointer swap and the publish: announce the live version again."""
    if live is None:
        return False
    repo = ModelRepository(settings.checkpoints_dir)
    if repo.is_published(model, live, settings.models_topic):
        return False
    done = repo.published(model)
    _log().warning("live_not_published", version=live.name, published=done.version if done else None)
    publish(settings, live)
    return True


def promote(settings: TrainerSettings, model: str, candidate: Path, manifest: Manifest) -> Path:
    """Write ``candidate``'s weights with ``manifest`` (its lineage added) as a new version of ``model``
    and point ``live`` at it. Publishing is the caller's next step."""
    repo = ModelRepository(settings.checkpoints_dir)
    _log().info("promotion_start", model=model, version=manifest.version)
    final = repo.write_version(model, read_weights(candidate, manifest), manifest)
    repo.set_live(model, manifest.version)
    return final


def adopt(settings: TrainerSettings, model: str, checkpoint: str | Path, *, publish_update: bool = True) -> dict[str, Any]:
    """Make an existing checkpoint the live version (first deployment, or a rollback) and announce it.

    When a newer checkpoint of the model exists, the update is marked (and signed) as a rollback:
    workers refuse an older checkpoint otherwise."""
    check_model_name(model)
    repo = ModelRepository(settings.checkpoints_dir)
    src = Path(checkpoint).resolve()
    manifest = read_manifest(src)
    if manifest.name != model:
        raise CheckpointError(f"{src} is a checkpoint of model {manifest.name!r}, not {model!r} (workers route on the name)")
    with repo.lock(model, settings.lock_timeout_s):
        repo.remove_leftovers(model)
        dest = repo.version_dir(model, manifest.version)
        if src != dest.resolve():
            if dest.exists():
                raise CheckpointError(f"{dest} exists already and is not {src}")
            repo.write_version(model, read_weights(src, manifest), manifest)  # a verified copy, atomic
        previous = repo.live(model)
        repo.set_live(model, manifest.version)
        published = publish(settings, dest) if publish_update else None
    return {"command": "refresh", "model": model, "outcome": "adopted", "version": manifest.version,
            "previous_version": previous.name if previous else None, "checkpoint": str(dest),
            "published": published is not None,
            "rollback": bool(published and published.get("rollback")),
            "signed_by": ((published or {}).get("signature") or {}).get("key_id")}
