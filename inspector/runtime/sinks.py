"""Where results go: the verdicts topic, the dead-letter topic, and the Redis heatmap cache.

The producer is a ``RenewingProducer``: kafka-python's idempotent producer enters a fatal state
when it cannot get a producer id (a broker restarted without its state answers InitProducerId
with an error) and then fails every later send; it is replaced by a new one, and the failed
verdicts are sent again by the worker's retry path.

Redis is a best-effort cache beside the verdict stream: writes run on their own thread behind a
bounded queue with short socket timeouts, and after a failure they are skipped (and counted) for
``redis_retry_after_s``, so a dead or slow Redis never delays a verdict or an offset commit.

Redis layout (documented in the README):
- ``inspector:heatmap:<frame_id>``: 8-bit gray PNG of the frame's part of the anomaly map at model
  resolution (the frame's aspect ratio),
  pixel = round(clip(map / threshold, 0, 2) * 127.5) (so 128 ~ the engine's region threshold), TTL
  ``heatmap_ttl_s``.
- ``inspector:camera:<camera_id>:latest``: list of that camera's latest frame ids, newest first,
  at most ``redis_max_frames_per_camera``; heatmaps pushed out of the list are deleted with it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import redis
import structlog
from kafka import KafkaProducer

from inspector.runtime.kafka_internals import producer_failed_fatally, producer_last_error
from inspector.runtime.observability import Metrics
from inspector.runtime.settings import Settings
from inspector.contracts.wire import HEATMAP_KEY_PREFIX, DeadLetter, Verdict, camera_latest_key

Callback = Callable[[], None]
ErrBack = Callable[[BaseException], None]


def _new_producer(settings: Settings) -> KafkaProducer:
    request_timeout = min(30_000, max(1_000, settings.kafka_delivery_timeout_ms - settings.kafka_linger_ms - 1))
    return KafkaProducer(
        **settings.kafka_common(),
        client_id=f"{settings.kafka_client_id}-{settings.worker_id}",
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.kafka_linger_ms,
        max_request_size=settings.kafka_max_request_size,
        delivery_timeout_ms=settings.kafka_delivery_timeout_ms,
        request_timeout_ms=request_timeout,
        max_block_ms=10_000,
    )


class RenewingProducer:
    """A KafkaProducer (``send``/``flush``/``close``) that is replaced once it can no longer send.

    Replaced when kafka-python reports a fatal producer state, or when sends have failed without
    a single success for ``stuck_after_s`` (a state this version does not report); at most once
    per ``min_interval_s``. The old producer is closed in the background."""

    def __init__(self, factory: Callable[[], KafkaProducer], stuck_after_s: float = 60.0,
                 min_interval_s: float = 2.0) -> None:
        self._factory = factory
        self._stuck_after_s = stuck_after_s
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._producer = factory()
        self._born = self._last_ok = time.monotonic()
        self._failing_since: float | None = None
        self.renewals = 0
        self._log = structlog.get_logger("inspector.runtime.sinks").bind(component="producer")

    def _current(self) -> KafkaProducer:
        with self._lock:
            now = time.monotonic()
            stuck = self._failing_since is not None and now - self._failing_since > self._stuck_after_s
            if (stuck or producer_failed_fatally(self._producer)) and now - self._born >= self._min_interval_s:
                old = self._producer
                why = "stuck" if stuck else f"fatal: {producer_last_error(old)}"
                self._producer = self._factory()
                self._born, self._failing_since = now, None
                self.renewals += 1
                self._log.warning("producer_renewed", why=str(why)[:300], renewals=self.renewals)
                threading.Thread(target=lambda: old.close(timeout=5), name="producer-close", daemon=True).start()
            return self._producer

    def record(self, ok: bool) -> None:
        """Outcome of one send (from its callback)."""
        now = time.monotonic()
        with self._lock:
            if ok:
                self._last_ok, self._failing_since = now, None
            elif self._failing_since is None:
                self._failing_since = now

    def send(self, topic: str, **kwargs: Any) -> Any:
        return self._current().send(topic, **kwargs)

    def flush(self, timeout: float | None = None) -> None:
        self._current().flush(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        with self._lock:
            self._producer.close(timeout=timeout)


def make_producer(settings: Settings) -> RenewingProducer:
    """The one producer of a worker: acks=all, idempotent, bounded blocking, renewed when stuck."""
    return RenewingProducer(lambda: _new_producer(settings), stuck_after_s=max(
        10.0, 2 * settings.kafka_delivery_timeout_ms / 1000.0))


def _send(
    producer: KafkaProducer | RenewingProducer,
    topic: str,
    key: bytes | None,
    value: bytes,
    headers: list[tuple[str, bytes]] | None,
    on_ok: Callback,
    on_err: ErrBack,
) -> None:
    record = getattr(producer, "record", None)

    def ok(_md: Any) -> None:
        if record is not None:
            record(True)
        on_ok()

    def err(exc: BaseException) -> None:
        if record is not None:
            record(False)
        on_err(exc)

    try:
        fut = producer.send(topic, key=key, value=value, headers=headers or None)
    except Exception as exc:  # noqa: BLE001 - buffer full, too large, closed: the caller retries
        err(exc)
        return
    fut.add_callback(ok)
    fut.add_errback(err)


class VerdictSink:
    """Sends verdicts (key: camera id) to the verdicts topic."""

    def __init__(self, producer: KafkaProducer | RenewingProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    def publish(self, verdict: Verdict, on_ok: Callback, on_err: ErrBack) -> None:
        _send(self.producer, self.topic, verdict.camera_id.encode(), verdict.to_bytes(), None, on_ok, on_err)


class DeadLetterSink:
    """Copies a rejected frame's original bytes, key and headers to the dead-letter topic."""

    def __init__(self, producer: KafkaProducer | RenewingProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    def publish(
        self,
        key: bytes | None,
        value: bytes | None,
        original_headers: Any,
        letter: DeadLetter,
        on_ok: Callback,
        on_err: ErrBack,
    ) -> None:
        try:
            headers = letter.to_kafka(original_headers)
        except Exception:  # noqa: BLE001 - garbage original headers: keep only ours
            headers = letter.to_kafka(None)
        _send(self.producer, self.topic, key, value or b"", headers, on_ok, on_err)


def heatmap_png(heatmap: np.ndarray, threshold: float) -> bytes:
    """Encode an anomaly map as the documented 8-bit PNG (128 ~ threshold)."""
    scale = 127.5 / threshold if threshold > 0 else 127.5
    m = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    u8 = np.clip(np.rint(m * scale), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", u8)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


# KEYS[1] = camera list; ARGV = max, ttl_ms, key prefix, then (frame_id, png) pairs.
_STORE_LUA = """
local max = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local prefix = ARGV[3]
for i = 4, #ARGV, 2 do
  local fid = ARGV[i]
  redis.call('SET', prefix .. fid, ARGV[i + 1], 'PX', ttl)
  redis.call('LREM', KEYS[1], 0, fid)
  redis.call('LPUSH', KEYS[1], fid)
end
while redis.call('LLEN', KEYS[1]) > max do
  local old = redis.call('RPOP', KEYS[1])
  redis.call('DEL', prefix .. old)
end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""


@dataclass(frozen=True)
class HeatmapItem:
    frame_id: str
    camera_id: str
    heatmap: np.ndarray
    threshold: float


class HeatmapCache:
    """Stores heatmaps in Redis from a background thread; failures are counted, never raised."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        url = settings.redis_connection_url()
        if not url:
            raise ValueError("HeatmapCache needs a redis_url")
        self._client = redis.Redis.from_url(url, **settings.redis_kwargs())
        self._script = self._client.register_script(_STORE_LUA)
        self._max = settings.redis_max_frames_per_camera
        self._ttl_ms = settings.heatmap_ttl_s * 1000
        self._retry_after = settings.redis_retry_after_s
        self._metrics = metrics
        self._queue: queue.Queue[list[HeatmapItem] | None] = queue.Queue(maxsize=settings.redis_queue_max)
        self._log = structlog.get_logger("inspector.runtime.sinks").bind(component="heatmaps")
        self._down_until = 0.0
        self._healthy = True
        self._thread = threading.Thread(target=self._run, name="heatmaps", daemon=True)

    def start(self) -> HeatmapCache:
        self._thread.start()
        return self

    @property
    def healthy(self) -> bool:
        return self._healthy

    def submit(self, items: list[HeatmapItem]) -> None:
        """Queue a batch of heatmaps; never blocks (a full queue counts as failures)."""
        if not items:
            return
        try:
            self._queue.put_nowait(items)
        except queue.Full:
            self._metrics.heatmap_failures.inc(len(items))

    def _write(self, items: list[HeatmapItem]) -> None:
        by_camera: dict[str, list[Any]] = {}
        for it in items:
            by_camera.setdefault(it.camera_id, []).extend([it.frame_id, heatmap_png(it.heatmap, it.threshold)])
        pipe = self._client.pipeline(transaction=False)
        for camera, pairs in by_camera.items():
            self._script(keys=[camera_latest_key(camera)], args=[self._max, self._ttl_ms, HEATMAP_KEY_PREFIX, *pairs], client=pipe)
        pipe.execute()

    def _run(self) -> None:
        while True:
            items = self._queue.get()
            if items is None:
                return
            if time.monotonic() < self._down_until:
                self._metrics.heatmap_failures.inc(len(items))
                continue
            try:
                self._write(items)
            except Exception as exc:  # noqa: BLE001 - Redis down/slow/full: count and go on
                self._metrics.heatmap_failures.inc(len(items))
                self._down_until = time.monotonic() + self._retry_after
                if self._healthy:
                    self._log.warning("redis_unavailable", error=type(exc).__name__, detail=str(exc)[:200])
                self._healthy = False
            else:
                self._metrics.heatmap_writes.inc(len(items))
                if not self._healthy:
                    self._log.info("redis_recovered")
                self._healthy = True

    def close(self, timeout: float = 2.0) -> None:
        """Stop the writer after what is queued (bounded by ``timeout``)."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        self._client.close()
