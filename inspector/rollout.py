"""Model rollout: which engine serves which model name, and the control-topic watcher that changes it.

The control topic (default ``inspector.models``) is compacted: key = model name, value = a
``ModelUpdate`` JSON naming a checkpoint directory and the sha256 of its manifest. At start the
worker reads it to the end and loads the latest update of each model; ``INSPECTOR_CHECKPOINT``
serves a model the topic does not name. Afterwards a background thread follows the topic, loads
each new version off the inference path, verifies it (manifest hash, name/version, weights hash
via ``load_engine``, one smoke inference) and installs it. The inference thread takes the engine
reference once per batch, so a swap always happens between batches. A refused update is logged
and counted; the old engine keeps serving.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from pydantic import ValidationError

from inspector.observability import Metrics
from inspector.settings import Settings
from inspector.wire import ModelUpdate

Loader = Callable[..., Any]  # engine.load_engine


class ModelRegistry:
    """The engines being served, by model name. Thread-safe reference swaps."""

    def __init__(self, metrics: Metrics, default_model: str | None = None) -> None:
        self._lock = threading.Lock()
        self._engines: dict[str, Any] = {}
        self._metrics = metrics
        self._default = default_model

    def get(self, name: str) -> Any | None:
        with self._lock:
            return self._engines.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._engines)

    def versions(self) -> dict[str, str]:
        with self._lock:
            return {n: e.version for n, e in self._engines.items()}

    def default_name(self) -> str | None:
        """Model of frames without a `model` header: the setting, else the only model served."""
        with self._lock:
            if self._default:
                return self._default
            return next(iter(self._engines)) if len(self._engines) == 1 else None

    def set_default(self, name: str) -> None:
        with self._lock:
            if not self._default:
                self._default = name

    def install(self, engine: Any) -> Any | None:
        """Serve ``engine`` for its name; returns the engine it replaced."""
        with self._lock:
            old = self._engines.get(engine.name)
            self._engines[engine.name] = engine
        if old is not None and old.version != engine.version:
            try:
                self._metrics.model_version.remove(old.name, old.version)
            except KeyError:
                pass
        self._metrics.model_version.labels(engine.name, engine.version).set(1)
        return old


def resolve_location(location: str, models_dir: Path) -> Path:
    """Checkpoint location → local directory (absolute path, file:// URL, or relative to models_dir)."""
    if location.startswith("file://"):
        return Path(location[len("file://"):])
    if "://" in location:
        raise ValueError(f"unsupported checkpoint location scheme: {location.split('://', 1)[0]}")
    path = Path(location)
    return path if path.is_absolute() else models_dir / path


def update_for_checkpoint(checkpoint_dir: str | Path) -> ModelUpdate:
    """A ModelUpdate announcing a checkpoint directory (used by the trainer's promotion and tests)."""
    from inspector.checkpoint import manifest_sha256, read_manifest

    manifest = read_manifest(checkpoint_dir)
    return ModelUpdate(
        name=manifest.name,
        version=manifest.version,
        checkpoint=str(Path(checkpoint_dir).resolve()),
        manifest_sha256=manifest_sha256(checkpoint_dir),
        published_at=time.time() * 1000,
    )


def publish_update(producer: Any, topic: str, update: ModelUpdate, timeout_s: float = 10.0) -> None:
    """Publish an update to the control topic (key = model name) and wait for the ack."""
    producer.send(topic, key=update.name.encode(), value=update.to_bytes()).get(timeout=timeout_s)


def ensure_control_topic(settings: Settings) -> None:
    """Create the compacted control topic if it is missing (best effort: ops may own it)."""
    log = structlog.get_logger("inspector.rollout")
    try:
        admin = KafkaAdminClient(**settings.kafka_common(), client_id=f"{settings.kafka_client_id}-admin")
    except Exception as exc:  # noqa: BLE001
        log.warning("control_topic_check_failed", error=type(exc).__name__)
        return
    try:
        if settings.models_topic not in set(admin.list_topics()):
            admin.create_topics(
                [NewTopic(settings.models_topic, 1, 1, topic_configs={"cleanup.policy": "compact"})]
            )
            log.info("control_topic_created", topic=settings.models_topic)
    except Exception as exc:  # noqa: BLE001 - exists already / not allowed: fine
        log.info("control_topic_not_created", topic=settings.models_topic, error=type(exc).__name__)
    finally:
        admin.close()


class Rollout:
    """Loads the starting models and follows the control topic."""

    def __init__(self, settings: Settings, registry: ModelRegistry, metrics: Metrics, loader: Loader) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self._load = loader
        self._log = structlog.get_logger("inspector.rollout")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: KafkaConsumer | None = None
        self._seen: dict[str, tuple[str, str]] = {}  # name -> (version, sha) last handled

    # -- loading ----------------------------------------------------------------------------
    def _load_verified(self, path: Path, expected_sha: str | None) -> Any:
        s = self.settings
        engine = self._load(
            path,
            s.device,
            expected_manifest_sha256=expected_sha,
            mask_size=s.mask_size,
            min_region_area=max(1, s.region_min_area),
            backend=s.engine_backend,
            precision=s.engine_precision,
            channels_last=s.engine_channels_last,
            compile=s.engine_compile,
            onnx_cache_dir=s.onnx_cache_dir,
        )
        h, w = engine.geometry.hw
        probe = engine.infer([np.full((h, w, 3), 128, dtype=np.uint8)])
        if len(probe) != 1 or not math.isfinite(float(probe[0].score)):
            from inspector.checkpoint import CheckpointError

            raise CheckpointError("smoke inference gave no finite score", "smoke_failed")
        # first calls at a new batch shape are slow (kernel selection, allocator): pay it here,
        # off the serving path, rather than in the first frames' latency
        rng = np.random.default_rng(0)
        warm = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(s.max_batch)]
        for _ in range(s.model_warmup_batches):
            engine.infer(warm)
        if s.engine_compile and s.model_warmup_batches:
            engine.warm_up(s.max_batch)  # a compiled model: every batch-size bucket, before serving
        return engine

    def apply(self, update: ModelUpdate) -> bool:
        """Load, verify and install one update; False (logged, counted) when refused."""
        seen = (update.version, update.manifest_sha256)
        if self._seen.get(update.name) == seen:
            return False
        self._seen[update.name] = seen
        current = self.registry.get(update.name)
        if current is not None and current.version == update.version:
            return True
        from inspector.checkpoint import CheckpointError, refusal_reason

        log = self._log.bind(model=update.name, version=update.version)
        t0 = time.monotonic()
        try:
            try:
                path = resolve_location(update.checkpoint, self.settings.models_dir)
            except ValueError as exc:
                raise CheckpointError(str(exc), "location") from exc
            engine = self._load_verified(path, update.manifest_sha256)
            if engine.name != update.name or engine.version != update.version:
                raise CheckpointError(
                    f"checkpoint is {engine.name}/{engine.version}, update names {update.name}/{update.version}",
                    "name_mismatch",
                )
        except Exception as exc:  # noqa: BLE001 - any failure refuses the update, never the worker
            reason = refusal_reason(exc)
            self.metrics.model_refused.labels(update.name, reason).inc()
            log.error(
                "model_refused",
                reason=reason,
                error=type(exc).__name__,
                detail=str(exc)[:500],
                serving=None if current is None else current.version,
            )
            return False
        self.registry.install(engine)
        self.metrics.model_loads.labels(update.name).inc()
        log.info(
            "model_installed",
            previous=None if current is None else current.version,
            load_s=round(time.monotonic() - t0, 3),
            device=str(engine.device),
        )
        return True

    def load_starting_checkpoint(self) -> None:
        """Serve INSPECTOR_CHECKPOINT for its model unless the control topic already named one."""
        ck = self.settings.checkpoint
        if ck is None:
            return
        try:
            engine = self._load_verified(Path(ck), None)
        except Exception as exc:  # noqa: BLE001
            from inspector.checkpoint import refusal_reason

            reason = refusal_reason(exc)
            self.metrics.model_refused.labels("checkpoint", reason).inc()
            self._log.error("starting_checkpoint_refused", path=str(ck), reason=reason, error=type(exc).__name__,
                            detail=str(exc)[:500])
            return
        self.registry.set_default(engine.name)
        if self.registry.get(engine.name) is None:
            self.registry.install(engine)
            self.metrics.model_loads.labels(engine.name).inc()
            self._log.info("model_installed", model=engine.name, version=engine.version, source="checkpoint")

    # -- control topic ----------------------------------------------------------------------
    def _open(self) -> KafkaConsumer:
        s = self.settings
        return KafkaConsumer(
            **s.kafka_common(),
            client_id=f"{s.kafka_client_id}-{s.worker_id}-control",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=1024 * 1024,
        )

    def _assign(self, consumer: KafkaConsumer) -> bool:
        parts = consumer.partitions_for_topic(self.settings.models_topic)
        if not parts:
            return False
        tps = [TopicPartition(self.settings.models_topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return True

    def _parse(self, record: Any) -> ModelUpdate | None:
        try:
            update = ModelUpdate.from_bytes(record.value or b"")
        except (ValidationError, ValueError) as exc:
            key = (record.key or b"?").decode("utf-8", "replace")[:64]
            self.metrics.model_refused.labels(key, "invalid_update").inc()
            self._log.error("model_update_invalid", key=key, offset=record.offset, detail=str(exc)[:300])
            return None
        key = (record.key or b"").decode("utf-8", "replace")
        if key and key != update.name:
            self.metrics.model_refused.labels(update.name, "key_mismatch").inc()
            self._log.error("model_update_key_mismatch", key=key[:64], name=update.name)
            return None
        return update

    def bootstrap(self) -> None:
        """Read the control topic to its end (bounded by rollout_catchup_s), apply the latest
        update per model, then fall back to INSPECTOR_CHECKPOINT."""
        ensure_control_topic(self.settings)
        consumer = self._consumer = self._open()
        latest: dict[str, ModelUpdate] = {}
        deadline = time.monotonic() + self.settings.rollout_catchup_s
        assigned = False
        while time.monotonic() < deadline:
            if not assigned:
                assigned = self._assign(consumer)
                if not assigned:
                    time.sleep(0.2)
                    continue
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    u = self._parse(r)
                    if u is not None:
                        latest[u.name] = u
            if self._caught_up(consumer):
                break
        for update in latest.values():
            self.apply(update)
        self.load_starting_checkpoint()

    @staticmethod
    def _caught_up(consumer: KafkaConsumer) -> bool:
        tps = consumer.assignment()
        for tp in tps:
            hw = consumer.highwater(tp)  # from the last fetch: no extra request
            if hw is None or consumer.position(tp) < hw:
                return False
        return bool(tps)

    def start(self) -> Rollout:
        self._thread = threading.Thread(target=self._run, name="rollout", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        consumer = self._consumer or self._open()
        assigned = bool(consumer.assignment())
        while not self._stop.is_set():
            try:
                if not assigned:
                    assigned = self._assign(consumer)
                    if not assigned:
                        self._stop.wait(1.0)
                        continue
                for records in consumer.poll(timeout_ms=500).values():
                    for r in records:
                        u = self._parse(r)
                        if u is not None:
                            self.apply(u)
            except Exception as exc:  # noqa: BLE001 - keep watching
                self._log.error("control_topic_error", error=type(exc).__name__, detail=str(exc)[:300])
                self._stop.wait(1.0)
        consumer.close()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        elif self._consumer is not None:
            self._consumer.close()
