"""`inspector serve`: build the worker from Settings and run it until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import signal
from typing import Any

import structlog

from inspector.runtime.observability import HealthServer, Metrics
from inspector.support.logs import configure_logging
from inspector.runtime.settings import Settings


UNSIGNED_WARNING = ("model updates are not signature-checked (INSPECTOR_MODEL_TRUSTED_KEYS is empty): anyone who "
                    "can write to the control topic chooses the model")


def _configure_threads(settings: Settings) -> None:
    """The decode pool is the decoder's parallelism; OpenCV's own pool (and a torch pool as wide as
    the machine) would oversubscribe the cores and make inference wait on spinning threads."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)


def build_and_run(settings: Settings) -> int:
    from inspector.engine.engine import load_engine  # torch import only when serving
    from inspector.runtime.rollout import ModelRegistry, Rollout
    from inspector.model.signing import TrustedKeys
    from inspector.runtime.sinks import DeadLetterSink, HeatmapCache, VerdictSink, make_producer
    from inspector.runtime.worker import Worker

    from inspector.pipeline.budget import pin_mmap_threshold

    configure_logging(settings.log_level, json_logs=True)
    log = structlog.get_logger("inspector.serve")
    _configure_threads(settings)
    if settings.malloc_mmap_threshold is not None and not pin_mmap_threshold(settings.malloc_mmap_threshold):
        log.warning("malloc_mmap_threshold_not_set", hint="not glibc; freed images may stay resident")
    log.info("settings", **settings.safe_dump())
    metrics = Metrics()
    registry = ModelRegistry(metrics, settings.default_model)
    try:
        trusted = TrustedKeys.parse(settings.model_trusted_keys)
    except (OSError, ValueError) as exc:
        log.error("trusted_keys_invalid", detail=str(exc)[:500])
        return 2
    metrics.trusted_keys.set(len(trusted.keys))
    warnings = [] if trusted else [UNSIGNED_WARNING]
    if trusted:
        log.info("model_signatures_required", key_ids=trusted.ids())
    else:
        log.warning("model_signatures_not_checked", detail=UNSIGNED_WARNING)
    rollout = Rollout(settings, registry, metrics, load_engine, trusted)
    producer = make_producer(settings)
    heatmaps = HeatmapCache(settings, metrics).start() if settings.redis_url else None
    worker = Worker(
        settings,
        metrics,
        registry,
        VerdictSink(producer, settings.verdicts_topic),
        DeadLetterSink(producer, settings.dlq_topic),
        heatmaps,
    )
    health = HealthServer(settings.http_host, settings.http_port, metrics, worker.ready, worker.alive,
                          lambda: warnings).start()
    log.info("http_listening", host=settings.http_host, port=health.port)

    def on_signal(signum: int, _frame: Any) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        rollout.bootstrap()
        if not registry.names():
            log.error("no_model", hint="set INSPECTOR_CHECKPOINT or publish a ModelUpdate to the control topic")
            return 2
        rollout.start()
        return worker.run()
    finally:
        rollout.stop()
        if heatmaps is not None:
            heatmaps.close()
        producer.close(timeout=5)
        health.stop()
        log.info("exited")


def _main(args: argparse.Namespace) -> int:
    overrides = {
        k: v
        for k, v in {
            "checkpoint": args.checkpoint,
            "kafka_bootstrap_servers": args.bootstrap_servers,
            "redis_url": args.redis_url,
            "http_port": args.http_port,
            "device": args.device,
        }.items()
        if v is not None
    }
    return build_and_run(Settings(**overrides))


def register(subparsers: Any) -> None:
    """Add `inspector serve`."""
    p = subparsers.add_parser(
        "serve",
        help="run an inspection worker (Kafka frames in, verdicts out)",
        description="All settings come from INSPECTOR_* environment variables; flags override a few.",
    )
    p.add_argument("--checkpoint", help="starting checkpoint (INSPECTOR_CHECKPOINT)")
    p.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (INSPECTOR_KAFKA_BOOTSTRAP_SERVERS)")
    p.add_argument("--redis-url", help="Redis URL (INSPECTOR_REDIS_URL); empty disables heatmaps")
    p.add_argument("--http-port", type=int, help="health/metrics port (INSPECTOR_HTTP_PORT)")
    p.add_argument("--device", help="torch device (INSPECTOR_DEVICE)")
    p.set_defaults(func=_main)
