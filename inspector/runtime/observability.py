"""Logs, metrics and health endpoints of one worker.

- ``Metrics``: Prometheus collectors in the worker's own ``CollectorRegistry`` (never the global
  default one, so several workers/tests in one process do not collide).
- ``HealthServer``: ``/healthz`` (process alive), ``/readyz`` (serving), ``/metrics``, on a small
  threaded ``http.server`` bound to 127.0.0.1 by default.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Every Prometheus collector of a worker, registered in ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry(auto_describe=True)
        self.frames = Counter("inspector_frames_total", "Frames polled from the input topic.", registry=r)
        self.verdicts = Counter(
            "inspector_verdicts_total", "Verdicts acknowledged by the broker.", ["verdict", "model"], registry=r
        )
        self.rejects = Counter("inspector_rejects_total", "Rejected frames by reason (a RejectReason code).", ["reason"], registry=r)
        self.dlq = Counter("inspector_dlq_total", "Dead-letter copies acknowledged.", registry=r)
        self.dlq_failures = Counter("inspector_dlq_failures_total", "Dead-letter copies that failed.", registry=r)
        self.publish_failures = Counter(
            "inspector_publish_failures_total", "Verdict sends that failed (they are retried).", registry=r
        )
        self.batch_size = Histogram(
            "inspector_batch_size", "Frames per inference batch.", ["model"], buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_wait = Histogram(
            "inspector_batch_wait_seconds", "Wait of a batch's first frame in the batcher.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.inference = Histogram(
            "inspector_inference_seconds", "engine.infer time per batch.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.decode = Histogram(
            "inspector_decode_seconds", "Decode time per frame.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.latency = Histogram(
            "inspector_latency_seconds", "Received -> verdict acknowledged.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.e2e_latency = Histogram(
            "inspector_e2e_latency_seconds", "captured-at -> verdict acknowledged.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.lag = Gauge("inspector_lag", "Records behind the high watermark.", ["partition"], registry=r)
        self.inflight = Gauge("inspector_inflight_frames", "Frames polled and not yet acknowledged.", registry=r)
        self.paused = Gauge("inspector_paused", "1 while partitions are paused for back-pressure.", registry=r)
        self.assigned_partitions = Gauge(
            "inspector_assigned_partitions", "Input partitions this worker owns now.", registry=r
        )
        self.rebalances = Counter(
            "inspector_rebalances_total", "Partition assignments received (one per group rebalance joined).", registry=r
        )
        self.rebalance_seconds = Gauge(
            "inspector_rebalance_seconds",
            "Seconds this worker has been waiting for its assignment in the current rebalance (0: none).",
            registry=r,
        )
        self.decoded_bytes = Gauge(
            "inspector_decoded_bytes", "Decoded-image bytes held (bounded by max_decoded_bytes).", registry=r
        )
        self.commits = Counter("inspector_commits_total", "Offset commits.", registry=r)
        self.heatmap_writes = Counter("inspector_heatmap_writes_total", "Heatmaps stored in Redis.", registry=r)
        self.heatmap_failures = Counter(
            "inspector_heatmap_failures_total", "Heatmaps not stored (Redis down, slow or queue full).", registry=r
        )
        self.model_version = Gauge(
            "inspector_model_info", "1 for the model version being served.", ["model", "version"], registry=r
        )
        self.model_threshold = Gauge(
            "inspector_model_threshold",
            "The threshold the served version is judged with; numerics: how this worker computes its scores, "
            "calibrated_in: the numerics the threshold was calibrated in (fp32 where the checkpoint has none of "
            "its own for them).",
            ["model", "version", "numerics", "calibrated_in"], registry=r,
        )
        self.model_loads = Counter("inspector_model_loads_total", "Model versions loaded.", ["model"], registry=r)
        self.trusted_keys = Gauge(
            "inspector_model_trusted_keys",
            "Public keys model updates must be signed with (0: updates are not signature-checked).", registry=r,
        )
        self.model_refused = Counter(
            "inspector_model_refused_total",
            "Model updates or starting checkpoints refused, by reason (a RefusalReason code).",
            ["model", "reason"],
            registry=r,
        )


class HealthServer:
    """/healthz, /readyz and /metrics on a daemon thread."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        ready: Callable[[], bool],
        alive: Callable[[], bool] = lambda: True,
        detail: Callable[[], list[str]] = list,
    ) -> None:
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
                elif path in ("/healthz", "/readyz"):
                    ok = alive() if path == "/healthz" else ready()
                    body, ctype, code = (b"ok\n" if ok else b"not ready\n"), "text/plain", 200 if ok else 503
                    if path == "/readyz":  # warnings an operator should see where they look first
                        body += "".join(f"warning: {line}\n" for line in detail()).encode()
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # quiet: metrics scrapes are not events
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
