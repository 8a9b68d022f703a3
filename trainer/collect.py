"""`trainer collect`: confirmed-normal frames from Kafka (or a folder) into the normal-image store.

Records on the normal topic (default ``frames.normal``) have the input topic's format: value =
encoded image bytes, headers ``camera-id``, ``line-id``, ``model``, ``captured-at``, ``frame-id``.
Each frame is routed by its ``model`` header (``TRAINER_DEFAULT_MODEL`` when absent), checked by the
service's own decoder (same limits), and stored durably; undecodable frames are counted and set
aside in ``STORE/<model>/rejected/`` with the reason. Offsets are committed only after every
record up to them is durably stored (or set aside), so a crash re-reads at most a batch and the
store drops the duplicates. ``--max-frames`` / ``--idle-timeout`` end a scheduled run.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from typing import Any

import structlog

from inspector.contracts.decode import DecodeError
from inspector.contracts.wire import FrameHeaders

from .settings import TrainerSettings
from .store import NormalStore, check_model_name

__all__ = ["collect", "import_folder"]


def _route(headers: FrameHeaders, default_model: str) -> tuple[str, str | None]:
    """(model to store under, rejection reason or None)."""
    if headers.model_header_bad:
        return default_model, "bad_model_header"
    model = headers.model or default_model
    try:
        check_model_name(model)
    except ValueError:
        return default_model, "bad_model_name"
    return model, None


def collect(settings: TrainerSettings, *, max_frames: int | None = None, idle_timeout_s: float | None = None,
            stop: threading.Event | None = None) -> dict[str, Any]:
    """Consume until ``max_frames`` records were handled, no record came for ``idle_timeout_s``
    (counted from the partition assignment), or ``stop`` is set. Returns the summary."""
    from kafka import KafkaConsumer
    from kafka.structs import OffsetAndMetadata

    log = structlog.get_logger("trainer.collect")
    stop = stop or threading.Event()
    check_model_name(settings.default_model)
    stores = NormalStore.from_settings(settings)
    consumer = KafkaConsumer(
        settings.normal_topic,
        **settings.kafka_common(),
        **settings.consumer_group_kwargs(),
        client_id=f"{settings.kafka_client_id}-collect",
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=settings.kafka_max_poll_records,
        max_partition_fetch_bytes=settings.kafka_max_partition_fetch_bytes,
    )
    t0 = time.monotonic()
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    per_model: dict[str, Counter[str]] = {}
    committed: dict[str, int] = {}
    evicted = 0
    stopped_by = "signal"
    last_activity: float | None = None  # set at the first assignment
    join_deadline = t0 + (idle_timeout_s or 0) + 2 * settings.kafka_session_timeout_ms / 1000 + 10
    log.info("collect_start", topic=settings.normal_topic, group=settings.group_id, store=str(settings.store_dir),
             max_frames=max_frames, idle_timeout_s=idle_timeout_s)
    try:
        while not stop.is_set():
            if max_frames is not None and counts["consumed"] >= max_frames:
                stopped_by = "max_frames"
                break
            remaining = None if max_frames is None else max_frames - counts["consumed"]
            batch = consumer.poll(timeout_ms=500, max_records=remaining)
            now = time.monotonic()
            if last_activity is None and consumer.assignment():
                last_activity = now
            if not batch:
                if idle_timeout_s is not None:
                    if last_activity is not None and now - last_activity >= idle_timeout_s:
                        stopped_by = "idle"
                        break
                    if last_activity is None and now > join_deadline:
                        stopped_by = "idle"
                        log.warning("collect_no_assignment", topic=settings.normal_topic)
                        break
                continue
            last_activity = now
            offsets: dict[Any, OffsetAndMetadata] = {}
            touched: set[str] = set()
            for tp, records in batch.items():
                for r in records:
                    model, reason = _handle(r, settings, stores, counts, reasons, per_model)
                    touched.add(model)
                    offsets[tp] = OffsetAndMetadata(r.offset + 1, "", -1)
            for model in touched:
                store = stores.model(model)
                if store.count() > store.max_images or store.total_bytes() > store.max_bytes:
                    evicted += len(store.enforce_bound())
            # every record up to these offsets is durably stored or set aside: now commit
            consumer.commit(offsets)
            for tp, om in offsets.items():
                committed[f"{tp.topic}:{tp.partition}"] = om.offset
            log.info("collect_batch", records=sum(len(v) for v in batch.values()), stored=counts["stored"],
                     duplicates=counts["duplicates"], rejected=counts["rejected"])
    finally:
        consumer.close(autocommit=False)
        summary_models = {}
        for name, store in stores.opened().items():
            summary_models[name] = {**dict(per_model.get(name, Counter())), "images": store.count()}
        stores.close()
    summary = {
        "command": "collect", "topic": settings.normal_topic, "group_id": settings.group_id,
        "consumed": counts["consumed"], "stored": counts["stored"], "duplicates": counts["duplicates"],
        "rejected": counts["rejected"], "rejected_by_reason": dict(reasons), "evicted": evicted,
        "models": summary_models, "committed": committed, "stopped_by": stopped_by,
        "seconds": round(time.monotonic() - t0, 2),
    }
    log.info("collect_done", **{k: v for k, v in summary.items() if k not in ("models", "committed")})
    return summary


def _handle(r: Any, settings: TrainerSettings, stores: NormalStore, counts: Counter, reasons: Counter,
            per_model: dict[str, Counter]) -> tuple[str, str | None]:
    counts["consumed"] += 1
    headers = FrameHeaders.from_kafka(r.headers, r.key, r.topic, r.partition, r.offset)
    model, reason = _route(headers, settings.default_model)
    store = stores.model(model)
    mc = per_model.setdefault(model, Counter())
    data = r.value or b""
    meta = {"topic": r.topic, "partition": r.partition, "offset": r.offset, "frame_id": headers.frame_id,
            "camera_id": headers.camera_id, "line_id": headers.line_id, "model_header": headers.model,
            "header_problems": headers.problems}
    detail = ""
    if reason is None:
        try:
            res = store.add(data, camera=headers.camera_id, line=headers.line_id, captured_at=headers.captured_at,
                            source_topic=r.topic, source_partition=r.partition, source_offset=r.offset,
                            frame_id=None if headers.frame_id_derived else headers.frame_id)
        except DecodeError as exc:
            reason, detail = exc.reason, exc.message
        else:
            key = "stored" if res.status == "stored" else "duplicates"
            counts[key] += 1
            mc[key] += 1
            return model, None
    counts["rejected"] += 1
    mc["rejected"] += 1
    reasons[reason] += 1
    store.reject(data, reason, detail, meta)
    structlog.get_logger("trainer.collect").warning("frame_rejected", model=model, reason=reason,
                                                    offset=r.offset, partition=r.partition)
    return model, reason


def import_folder(settings: TrainerSettings, model: str, folder: str, camera: str = "import",
                  line: str | None = None) -> dict[str, Any]:
    stores = NormalStore.from_settings(settings)
    try:
        result = stores.model(check_model_name(model)).import_folder(folder, camera=camera, line=line)
    finally:
        stores.close()
    return {"command": "collect", "import": str(folder), "model": model, **result}


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM / SIGINT end the run after the current batch (its offsets still committed)."""
    def handler(signum, frame):  # noqa: ARG001
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
