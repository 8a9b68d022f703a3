"""Model rollout: which engine serves which model name, and the control-topic watcher that changes it.

The control topic (default ``inspector.models``) is compacted: key = model name, value = a
``ModelUpdate`` JSON naming a checkpoint directory and the sha256 of its manifest. At start the
worker reads it to the end and loads the newest acceptable update of each model;
``INSPECTOR_CHECKPOINT`` serves a model the topic does not name. Afterwards a background thread
follows the topic, loads each new version off the inference path, verifies it and installs it. The
inference thread takes the engine reference once per batch, so a swap always happens between
batches. A refused update is logged and counted; the old engine keeps serving.

Checks, in order, each with its refusal reason: the location resolves inside
``INSPECTOR_MODELS_DIR`` (``location``); with trusted keys, the update is signed by one of them
(``signature``, ``inspector.model.signing``); the manifest is the announced one (``manifest_hash``); the
update was issued after the one the live model came with (``replay``) and, unless it is a
rollback, the checkpoint is not older than the live one (``rollback``); then the weights hash,
the teacher and one smoke inference (``engine.load_engine``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from kafka import KafkaConsumer, TopicPartition
from pydantic import ValidationError

from inspector.contracts.control import ensure_control_topic
from inspector.model.checkpoint import CheckpointError, Manifest, manifest_sha256, read_manifest, refusal_reason
from inspector.model.repository import ModelRepository
from inspector.runtime.observability import Metrics
from inspector.runtime.settings import Settings
from inspector.model.signing import SignatureError, TrustedKeys, read_statement, statement_matches, verify
from inspector.contracts.wire import ModelUpdate
from inspector.engine.protocol import Engine

Loader = Callable[..., Engine]  # engine.load_engine(path, device, options, expected_manifest_sha256=...)

#: Updates per model kept while reading the control topic at start (the newest valid one wins).
BOOTSTRAP_CANDIDATES = 16


class ModelRegistry:
    """The engines being served, by model name. Thread-safe reference swaps."""

    def __init__(self, metrics: Metrics, default_model: str | None = None) -> None:
        self._lock = threading.Lock()
        self._engines: dict[str, Engine] = {}
        self._metrics = metrics
        self._default = default_model

    def get(self, name: str) -> Engine | None:
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

    def install(self, engine: Engine) -> Engine | None:
        """Serve ``engine`` for its name; returns the engine it replaced."""
        with self._lock:
            old = self._engines.get(engine.name)
            self._engines[engine.name] = engine
        if old is not None:
            for gauge, labels in ((self._metrics.model_version, _info_labels(old)),
                                  (self._metrics.model_threshold, _threshold_labels(old))):
                try:
                    gauge.remove(*labels)
                except KeyError:
                    pass
        self._metrics.model_version.labels(*_info_labels(engine)).set(1)
        self._metrics.model_threshold.labels(*_threshold_labels(engine)).set(engine.threshold)
        return old


def _info_labels(engine: Engine) -> tuple[str, str]:
    return engine.name, engine.version


def _threshold_labels(engine: Engine) -> tuple[str, str, str, str]:
    return engine.name, engine.version, engine.numerics, engine.threshold_calibrated_in


@dataclass(frozen=True)
class Release:
    """What the served version of a model came with: the order in which updates may follow."""

    version: str
    created_at: datetime | None
    published_at: float | None

    @classmethod
    def of(cls, manifest: Manifest, published_at: float | None) -> Release:
        return cls(manifest.version, manifest.created(), published_at)


def ordering_refusal(live: Release | None, update: ModelUpdate, manifest: Manifest) -> CheckpointError | None:
    """Why ``update`` may not replace the live release (None: it may).

    An update issued no later than the live one's is a replay, whatever it names; a checkpoint
    created before the live one is a rollback, allowed only when the update says so (and, with
    trusted keys, the trainer signed that). Unknown times are not compared."""
    if live is None or live.version == update.version:
        return None
    if update.published_at is not None and live.published_at is not None and update.published_at <= live.published_at:
        return CheckpointError(
            f"update for {update.name}/{update.version} was issued at {update.published_at:.0f} ms, not after "
            f"the update of the live version {live.version} ({live.published_at:.0f} ms): a replayed or stale update",
            "replay")
    created = manifest.created()
    if created is not None and live.created_at is not None and not update.rollback:
        if created < live.created_at:
            return CheckpointError(
                f"checkpoint {update.version} (created {manifest.created_at}) is older than the live version "
                f"{live.version} (created {live.created_at.isoformat()}) and the update is not a rollback "
                "(`trainer refresh --adopt` marks and signs one)", "rollback")
    return None


class Rollout:
    """Loads the starting models and follows the control topic."""

    def __init__(self, settings: Settings, registry: ModelRegistry, metrics: Metrics, loader: Loader,
                 trusted: TrustedKeys | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.trusted = trusted if trusted is not None else TrustedKeys.parse(settings.model_trusted_keys)
        self._load = loader
        self.repository = ModelRepository(settings.models_dir)  # the only place updates may point
        self._log = structlog.get_logger("inspector.runtime.rollout")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: KafkaConsumer | None = None
        self._seen: dict[str, tuple[object, ...]] = {}  # name -> the last update handled
        self._live: dict[str, Release] = {}  # name -> what the served version came with

    # -- loading ----------------------------------------------------------------------------
    def _load_verified(self, path: Path, expected_sha: str | None) -> Engine:
        s = self.settings
        engine = self._load(path, s.device, s.engine_options(), expected_manifest_sha256=expected_sha)
        h, w = engine.geometry.hw
        probe = engine.infer([np.full((h, w, 3), 128, dtype=np.uint8)])
        if len(probe) != 1 or not math.isfinite(float(probe[0].score)):
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

    def _refuse(self, model: str, exc: BaseException, log: Any, event: str = "model_refused", **extra: Any) -> None:
        reason = refusal_reason(exc)
        self.metrics.model_refused.labels(model, reason).inc()
        current = self.registry.get(model)
        log.error(event, reason=reason, error=type(exc).__name__, detail=str(exc)[:500],
                  serving=None if current is None else current.version, **extra)

    def apply(self, update: ModelUpdate) -> bool:
        """Check, load, verify and install one update; False (logged, counted) when refused."""
        seen = (update.version, update.manifest_sha256, update.published_at, update.rollback,
                update.signature.value if update.signature else None)
        if self._seen.get(update.name) == seen:
            return False
        self._seen[update.name] = seen
        current = self.registry.get(update.name)
        if current is not None and current.version == update.version:
            return True
        log = self._log.bind(model=update.name, version=update.version)
        t0 = time.monotonic()
        signer = None
        try:
            try:
                path = self.repository.resolve(update.checkpoint)
            except ValueError as exc:
                raise CheckpointError(str(exc), "location") from exc
            if self.trusted:
                signer = verify(update, self.trusted)
            manifest = read_manifest(path, update.manifest_sha256)
            if manifest.name != update.name or manifest.version != update.version:
                raise CheckpointError(
                    f"checkpoint is {manifest.name}/{manifest.version}, update names {update.name}/{update.version}",
                    "name_mismatch",
                )
            refusal = ordering_refusal(self._live.get(update.name), update, manifest)
            if refusal is not None:
                raise refusal
            # the same manifest, pinned by its hash: its name and version were checked above
            engine = self._load_verified(path, update.manifest_sha256)
        except Exception as exc:  # noqa: BLE001 - any failure refuses the update, never the worker
            self._refuse(update.name, exc, log, rollback=update.rollback,
                         key_id=update.signature.key_id if update.signature else None)
            return False
        self.registry.install(engine)
        self._live[update.name] = Release.of(engine.manifest, update.published_at)
        self.metrics.model_loads.labels(update.name).inc()
        log.info(
            "model_installed",
            previous=None if current is None else current.version,
            load_s=round(time.monotonic() - t0, 3),
            device=str(engine.device),
            signed_by=signer,
            rollback=update.rollback,
        )
        return True

    def _starting_statement(self, ck: Path) -> tuple[ModelUpdate | None, str | None]:
        """The starting checkpoint's signed statement and its signer (verified when keys are set)."""
        if not self.trusted:
            try:
                return read_statement(ck), None
            except SignatureError:
                return None, None  # unverified anyway: it only orders later updates
        statement = read_statement(ck)
        if statement is None:
            raise SignatureError(f"{ck} has no signature.json and trusted keys are configured "
                                 "(sign it: `trainer refresh --adopt`, or publish a signed update)")
        statement_matches(statement, read_manifest(ck), manifest_sha256(ck))
        return statement, verify(statement, self.trusted)

    def load_starting_checkpoint(self) -> None:
        """Serve INSPECTOR_CHECKPOINT for its model unless the control topic already named one."""
        ck = self.settings.checkpoint
        if ck is None:
            return
        try:
            name = read_manifest(Path(ck)).name
            if self.registry.get(name) is not None:  # the control topic named it: that one serves
                self.registry.set_default(name)
                return
            statement, signer = self._starting_statement(Path(ck))
            engine = self._load_verified(Path(ck), statement.manifest_sha256 if signer else None)
        except Exception as exc:  # noqa: BLE001
            self._refuse("checkpoint", exc, self._log, "starting_checkpoint_refused", path=str(ck))
            return
        self.registry.set_default(engine.name)
        self.registry.install(engine)
        self._live[engine.name] = Release.of(engine.manifest, statement.published_at if statement else None)
        self.metrics.model_loads.labels(engine.name).inc()
        self._log.info("model_installed", model=engine.name, version=engine.version, source="checkpoint",
                       signed_by=signer)

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
        """Read the control topic to its end (bounded by rollout_catchup_s), install the newest
        acceptable update of each model, then fall back to INSPECTOR_CHECKPOINT.

        Newest by issue time, not by offset: a forged or replayed record written last does not
        leave a starting worker without the model while a valid one is still on the topic."""
        s = self.settings
        ensure_control_topic(s.kafka_common(), f"{s.kafka_client_id}-admin", s.models_topic)
        consumer = self._consumer = self._open()
        found: dict[str, list[tuple[float, int, ModelUpdate]]] = {}
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
                        kept = found.setdefault(u.name, [])
                        kept.append((u.published_at if u.published_at is not None else -math.inf, r.offset, u))
                        del kept[:-BOOTSTRAP_CANDIDATES]
            if self._caught_up(consumer):
                break
        self.install_newest(found)
        self.load_starting_checkpoint()

    def published_record(self, name: str) -> ModelUpdate | None:
        """The trainer's record of the last update it published for ``name``
        (``MODELS_DIR/<name>/published.json``), if it is there and names this control topic."""
        return self.repository.read_published(name, self.settings.models_topic)

    def install_newest(self, found: dict[str, list[tuple[float, int, ModelUpdate]]]) -> None:
        """Per model, install the newest acceptable update among those read from the topic and the
        trainer's published record in the models directory (issue time, then topic order).

        The record makes a replay that compaction left as the topic's only record harmless to a
        worker starting later (a scale-out): the trainer's newer, signed update wins."""
        for name, candidates in found.items():
            record = self.published_record(name)
            if record is not None and record.published_at is not None:
                candidates = [*candidates, (record.published_at, -1, record)]
            for _, _, update in sorted(candidates, key=lambda c: (c[0], c[1]), reverse=True):
                if self.apply(update):
                    break

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
