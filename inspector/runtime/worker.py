"""The Kafka loop: poll → decode (thread pool) → micro-batch → infer → verdicts → Redis → commit.

Threads and who owns what:
- consumer thread (``run``): the only one touching the KafkaConsumer: poll, pause/resume,
  commits, rebalance callbacks. Records are tracked in an ``OffsetTracker`` as they are polled.
- decode pool: decodes frames; a FIFO of decode futures is drained in poll order (so a camera's
  frames enter the batcher in order) from the futures' done-callbacks.
- inference thread: takes batches (one model each), runs ``engine.infer``, builds verdicts and
  sends them; heatmaps go to the Redis writer thread.
- producer I/O thread: acknowledgements mark offsets done; the consumer thread commits the
  highest offset below which everything is acknowledged.

Memory is bounded: when frames or encoded bytes in flight pass their limits, all partitions are
paused; decoded pixels are bounded by a byte budget (``max_decoded_bytes``) that a decode takes
from (sized from the image header, before decoding) and that is given back once the image is
dropped after inference.
Bad input never raises out of here: it becomes a ``rejected`` verdict plus a dead-letter copy.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import structlog
from kafka import KafkaConsumer, TopicPartition
from kafka import AsyncConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from inspector.contracts.decode import DecodeError, DecodeLimits, ImageInfo, decode_image
from inspector.contracts.reasons import RejectReason
from inspector.contracts.wire import FrameHeaders, Verdict, heatmap_key
from inspector.pipeline.admission import admission
from inspector.pipeline.batching import MicroBatcher
from inspector.pipeline.budget import ByteBudget
from inspector.pipeline.frame import Frame
from inspector.pipeline.offsets import OffsetTracker, Ticket
from inspector.pipeline.rejection import MAX_DETAIL, Rejection
from inspector.pipeline.verdicts import dead_letter, inspected_verdict, rejected_verdict, split_stale
from inspector.runtime.kafka_internals import loop_sleep, rebalance_commit
from inspector.runtime.observability import Metrics
from inspector.runtime.rollout import ModelRegistry
from inspector.runtime.settings import Settings
from inspector.runtime.sinks import DeadLetterSink, HeatmapCache, HeatmapItem, VerdictSink

if TYPE_CHECKING:
    from inspector.engine.engine import Engine, Inspection


def _now_ms() -> float:
    return time.time() * 1000.0


class _Listener(AsyncConsumerRebalanceListener):
    """kafka-python 3 runs rebalance callbacks on the consumer's I/O loop: the drain waits and the
    commit are awaited there (heartbeats keep going) instead of blocking it."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.worker._rebalance_started()
        await self.worker._on_revoked(set(revoked), commit=True)

    async def on_partitions_lost(self, lost: Any) -> None:
        self.worker._rebalance_started()
        await self.worker._on_revoked(set(lost), commit=False)  # already someone else's: no commit

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker._on_assigned(set(assigned))


class _Countdown:
    """Calls ``done`` once after ``n`` calls to ``tick`` (verdict + dead-letter copy)."""

    def __init__(self, n: int, done: Callable[[], None]) -> None:
        self._n = n
        self._done = done
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self._n -= 1
            fire = self._n == 0
        if fire:
            self._done()


class Worker:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        registry: ModelRegistry,
        verdicts: VerdictSink,
        dead_letters: DeadLetterSink,
        heatmaps: HeatmapCache | None,
    ) -> None:
        self.s = settings
        self.metrics = metrics
        self.registry = registry
        self.verdicts = verdicts
        self.dead_letters = dead_letters
        self.heatmaps = heatmaps
        self.log = structlog.get_logger("inspector.runtime.worker").bind(worker_id=settings.worker_id)
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self.batcher: MicroBatcher[Frame] = MicroBatcher(
            settings.max_batch,
            settings.max_delay_ms / 1000.0,
            max_items=settings.max_inflight_frames + settings.kafka_max_poll_records,
        )
        self.limits = DecodeLimits(max_bytes=settings.max_frame_bytes, max_pixels=settings.max_pixels)
        self._pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self._decoded = ByteBudget(settings.max_decoded_bytes)
        # read at scrape time: a value set once per poll loop lagged the budget by a loop turn
        metrics.decoded_bytes.set_function(lambda: self._decoded.used)
        self._decoding: deque[tuple[Frame, Future[None]]] = deque()
        self._pump_lock = threading.Lock()
        self._retry: deque[tuple[Frame, Verdict, Callable[[], None], float]] = deque()
        self._inflight_lock = threading.Lock()
        self._inflight_frames = 0
        self._inflight_bytes = 0
        self._stop = threading.Event()
        self._paused = False
        self._joined = False
        #: when the rebalance this worker waits on began (None: not waiting); warned: logged as slow
        self._rebalance_since: float | None = None
        self._rebalance_warned = False
        self.metrics.rebalance_seconds.set_function(self._rebalance_wait)
        self._last_loop = time.monotonic()
        self._infer_thread = threading.Thread(target=self._infer_loop, name="inference", daemon=True)
        self._consumer: KafkaConsumer | None = None

    # ------------------------------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------------------------------
    def _make_consumer(self) -> KafkaConsumer:
        s = self.s
        return KafkaConsumer(
            **s.kafka_common(),
            **s.consumer_group_kwargs(),
            client_id=f"{s.kafka_client_id}-{s.worker_id}",
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=s.kafka_max_poll_records,
            max_partition_fetch_bytes=s.kafka_max_partition_fetch_bytes,
            fetch_max_bytes=s.kafka_fetch_max_bytes,
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
        )

    def stop(self) -> None:
        """Ask for a graceful stop (signal-safe: only sets an event)."""
        self._stop.set()

    def ready(self) -> bool:
        return self._joined and bool(self.registry.names()) and not self._stop.is_set()

    def alive(self) -> bool:
        return time.monotonic() - self._last_loop < 60 and (
            self._infer_thread.is_alive() or not self._infer_thread.ident
        )

    def _await_topic(self, consumer: KafkaConsumer, patience_s: float = 30.0) -> None:
        """Join the group once the frames topic is in this consumer's metadata. A group leader
        that assigns before it knows the topic's partitions hands out none, and kafka-python 3 did
        not always rejoin when they appeared (seen once in the hour-long soak: a first worker
        ready, with no partition, for 180 s). After ``patience_s`` it subscribes anyway, so a
        topic that the broker auto-creates on subscription still works."""
        deadline = time.monotonic() + patience_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                if consumer.partitions_for_topic(self.s.frames_topic):
                    return
            except Exception as exc:  # noqa: BLE001 - broker not reachable yet: keep waiting
                self.log.warning("metadata_failed", error=type(exc).__name__, detail=str(exc)[:300])
            self.log.info("waiting_for_topic", topic=self.s.frames_topic)
            self._stop.wait(1.0)

    def _sync_group_metadata(self, consumer: KafkaConsumer) -> None:
        """Refresh the metadata once the subscription is set, before the first join.

        kafka-python 3 snapshots the subscribed topics' partitions only on a metadata update. A
        first join right after ``subscribe`` assigns with an empty snapshot, and the next routine
        metadata refresh then differs from it and forces a second, group-wide rebalance half a
        second later. Every worker start cost the group two rebalances, and now and then the second
        never completed (a ready worker, its partitions revoked, none assigned again).
        ``topics()`` is kafka-python's public blocking refresh; its update reaches the snapshot."""
        try:
            consumer.topics()
        except Exception as exc:  # noqa: BLE001 - only costs the extra rebalance this avoids
            self.log.warning("metadata_failed", error=type(exc).__name__, detail=str(exc)[:300])

    def run(self) -> int:
        consumer = self._consumer = self._make_consumer()
        self._await_topic(consumer)
        self._rebalance_started()  # the first join is a rebalance too
        consumer.subscribe([self.s.frames_topic], listener=_Listener(self))
        self._sync_group_metadata(consumer)
        self._infer_thread.start()
        self.log.info("worker_started", topic=self.s.frames_topic, group=self.s.group_id, models=self.registry.versions())
        last_commit = last_lag = time.monotonic()
        commit_every = self.s.commit_interval_ms / 1000.0
        while not self._stop.is_set():
            self._last_loop = time.monotonic()
            try:
                polled = consumer.poll(timeout_ms=50, max_records=self.s.kafka_max_poll_records)
            except Exception as exc:  # noqa: BLE001 - broker trouble is retried, never fatal
                self.log.warning("poll_failed", error=type(exc).__name__, detail=str(exc)[:300])
                time.sleep(0.2)
                continue
            for tp, records in polled.items():
                for record in records:
                    self._intake(tp, record)
            self._resend_failed()
            now = time.monotonic()
            if now - last_commit >= commit_every:
                self._commit(self.tracker.committable())
                last_commit = now
            if now - last_lag >= 1.0:
                self._observe_lag()
                self._watch_rebalance()
                last_lag = now
            self._backpressure()
        self._shutdown()
        return 0

    def _shutdown(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        log = self.log.bind(pending=self.tracker.pending())
        log.info("worker_stopping")
        try:
            consumer.pause(*consumer.assignment())
        except Exception:  # noqa: BLE001
            pass
        deadline = time.monotonic() + self.s.drain_timeout_s
        self.batcher.flush_now(True)
        while self.tracker.pending() > 0 and time.monotonic() < deadline:
            self._resend_failed()
            time.sleep(0.01)
        self.batcher.close()
        self._infer_thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        try:
            self.verdicts.producer.flush(timeout=max(1.0, deadline - time.monotonic()))
        except Exception as exc:  # noqa: BLE001
            self.log.warning("flush_failed", error=type(exc).__name__)
        self._commit(self.tracker.committable())
        left = self.tracker.pending()
        try:
            consumer.close(autocommit=False)
        except Exception:  # noqa: BLE001
            pass
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.log.info("worker_stopped", uncommitted=left)

    # ------------------------------------------------------------------------------------------
    # consumer thread: intake, commits, back-pressure, rebalances
    # ------------------------------------------------------------------------------------------
    def _intake(self, tp: TopicPartition, record: Any) -> None:
        self.metrics.frames.inc()
        try:
            ticket = self.tracker.track(tp, record.offset)
        except (KeyError, ValueError) as exc:  # not ours any more / seen already
            self.log.debug("record_skipped", partition=tp.partition, offset=record.offset, why=str(exc))
            return
        value = record.value
        size = len(value) if isinstance(value, (bytes, bytearray)) else 0
        with self._inflight_lock:
            self._inflight_frames += 1
            self._inflight_bytes += size
        try:
            self._route(ticket, record, size)
        except Exception as exc:  # noqa: BLE001 - a tracked record must always end in a verdict
            self.log.error("intake_failed", partition=record.partition, offset=record.offset, error=type(exc).__name__)
            headers = FrameHeaders.from_kafka(None, None, record.topic, record.partition, record.offset)
            frame = Frame(
                ticket=ticket, topic=record.topic, partition=record.partition, offset=record.offset,
                key=record.key if isinstance(record.key, bytes) else None,
                value=record.value if isinstance(record.value, bytes) else None, raw_headers=None,
                headers=headers, model=None, received_ms=_now_ms(), received_mono=time.monotonic(), size=size,
                reject=Rejection.of_error(RejectReason.INTERNAL_ERROR, exc),
            )
            self._publish_rejected(frame)

    def _route(self, ticket: Ticket[TopicPartition], record: Any, size: int) -> None:
        """Validate a tracked record and send it to the decoder, or straight to rejection."""
        headers = FrameHeaders.from_kafka(record.headers, record.key, record.topic, record.partition, record.offset)
        value = record.value
        frame = Frame(
            ticket=ticket, topic=record.topic, partition=record.partition, offset=record.offset,
            key=record.key, value=value, raw_headers=record.headers, headers=headers,
            model=headers.model or self.registry.default_name(), received_ms=_now_ms(),
            received_mono=time.monotonic(), size=size,
        )
        frame.reject = admission(size, self.s.max_frame_bytes, headers, frame.model,
                                 lambda name: self.registry.get(name) is not None)
        if frame.reject is not None:
            fut: Future[None] = Future()
            fut.set_result(None)
        else:
            fut = self._pool.submit(self._decode, frame)
        with self._pump_lock:
            self._decoding.append((frame, fut))
        fut.add_done_callback(lambda _f: self._pump())

    def _decode(self, frame: Frame) -> None:
        t0 = time.perf_counter()

        def reserve(info: ImageInfo) -> None:  # header checked, nothing decoded yet
            need = info.decoded_bytes
            while not self._decoded.acquire(need, timeout=1.0, overdraw=lambda: self._at_head(frame)):
                if self._stop.is_set():  # shutting down: never hang a decoder thread
                    self._decoded.force(need)
                    break
            with self._inflight_lock:
                frame.reserved = need

        try:
            frame.image = decode_image(frame.value or b"", self.limits, frame.headers.content_type, reserve)
        except DecodeError as exc:
            frame.reject = Rejection(exc.reason, str(exc)[:MAX_DETAIL])
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not crash the worker
            frame.reject = Rejection.of_error(RejectReason.UNDECODABLE, exc)
        finally:
            self.metrics.decode.observe(time.perf_counter() - t0)
        if frame.reject is None and frame.image is not None:
            frame.value = None  # only rejected frames need their bytes (dead-letter copy)
            with self._inflight_lock:  # the header's estimate -> the array's real size
                extra, frame.reserved = frame.image.nbytes - frame.reserved, frame.image.nbytes
            if extra > 0:
                self._decoded.force(extra)
            elif extra < 0:
                self._decoded.release(-extra)
        else:
            self._drop_image(frame)

    def _at_head(self, frame: Frame) -> bool:
        """Whether every frame polled before ``frame`` has left the decoders: the pump waits for it
        alone, so it may overdraw the decoded-bytes budget (see ``inspector.pipeline.budget``). A lock-free
        read; a stale answer only delays the decision until the next wake-up."""
        try:
            return self._decoding[0][0] is frame
        except IndexError:
            return False

    def _pump(self) -> None:
        """Move decoded frames, in poll order, into the batcher (or to the reject path)."""
        moved = False
        with self._pump_lock:
            while self._decoding and self._decoding[0][1].done():
                frame, _ = self._decoding.popleft()
                moved = True
                try:
                    self._route_decoded(frame)
                except Exception as exc:  # noqa: BLE001 - keep pumping; the frame stays uncommitted
                    self.log.error("pump_failed", frame_id=frame.headers.frame_id, error=type(exc).__name__)
        if moved:
            self._decoded.wake()  # a new head of the line may be waiting for the budget

    def _units(self, frame: Frame) -> int:
        """The frame's share of a batch: its tiles for a tiled model, else 1."""
        engine = self.registry.get(frame.model or "")
        return 1 if engine is None or frame.image is None else engine.units(frame.image.shape[:2])

    def _route_decoded(self, frame: Frame) -> None:
        if frame.reject is not None:
            self._publish_rejected(frame)
        elif not self.batcher.put(frame.model or "", frame, timeout=5.0, weight=self._units(frame)):
            if self.batcher.closed:
                self._finish(frame)  # shutting down: uncommitted, read again later
            else:  # cannot happen while back-pressure bounds in-flight frames
                frame.reject = Rejection(RejectReason.OVERLOADED, "the batcher stayed full")
                self._publish_rejected(frame)

    def _backpressure(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        with self._inflight_lock:
            frames, nbytes = self._inflight_frames, self._inflight_bytes
        self.metrics.inflight.set(frames)
        over = frames >= self.s.max_inflight_frames or nbytes >= self.s.max_inflight_bytes
        under = frames <= self.s.max_inflight_frames // 2 and nbytes <= self.s.max_inflight_bytes // 2
        if over and not self._paused:
            self._paused = True
            self.metrics.paused.set(1)
            self.log.info("partitions_paused", inflight=frames, inflight_bytes=nbytes)
        elif self._paused and under:
            self._paused = False
            self.metrics.paused.set(0)
            consumer.resume(*consumer.assignment())
            self.log.info("partitions_resumed", inflight=frames)
        if self._paused:
            consumer.pause(*consumer.assignment())  # also covers partitions assigned meanwhile

    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets or self._consumer is None:
            return
        try:
            self._consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except Exception as exc:  # noqa: BLE001 - rebalance in progress etc.: next time
            self.log.warning("commit_failed", error=type(exc).__name__, detail=str(exc)[:300])
            return
        self.tracker.mark_committed(offsets)
        self.metrics.commits.inc()

    def _observe_lag(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        for tp in self.tracker.assigned():
            hw = consumer.highwater(tp)
            pos = self.tracker.last_tracked(tp)
            if hw is None:
                continue
            if pos is None:
                try:
                    pos = consumer.position(tp, timeout_ms=0)
                except Exception:  # noqa: BLE001
                    pos = None
            if pos is not None:
                self.metrics.lag.labels(f"{tp.topic}-{tp.partition}").set(max(0, hw - pos))

    def _owned(self) -> set[TopicPartition]:
        try:
            return set(self._consumer.assignment()) if self._consumer is not None else set()
        except Exception:  # noqa: BLE001 - a closing consumer: nothing owned
            return set()

    def _rebalance_started(self) -> None:
        if self._rebalance_since is None:
            self._rebalance_since = time.monotonic()
            self._rebalance_warned = False

    def _rebalance_wait(self) -> float:
        since = self._rebalance_since
        return 0.0 if since is None else time.monotonic() - since

    def _watch_rebalance(self) -> None:
        """Log once when a rebalance outlasts what a healthy group needs: every member drains
        (``drain_timeout_s``) and a dead one is dropped after a session timeout. This worker then
        serves nothing; ``inspector_rebalance_seconds`` keeps growing for an alert to see."""
        waited = self._rebalance_wait()
        limit = self.s.drain_timeout_s + 2 * self.s.kafka_session_timeout_ms / 1000.0
        if waited > limit and not self._rebalance_warned:
            self._rebalance_warned = True
            self.log.warning("rebalance_slow", waited_s=round(waited, 1), expected_within_s=round(limit, 1),
                             partitions_owned=len(self._owned()))

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.tracker.assign(assigned)
        self._joined = True
        waited = self._rebalance_wait()
        self._rebalance_since = None
        self.metrics.rebalances.inc()
        self.metrics.assigned_partitions.set(len(self._owned() | assigned))
        self.log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned),
                      rebalance_s=round(waited, 3))

    async def _on_revoked(self, revoked: set[TopicPartition], commit: bool) -> None:
        """Publish and commit what is in flight for ``revoked`` (bounded by drain_timeout_s), drop
        the rest uncommitted. Runs on the consumer's I/O loop while ``poll`` waits for it."""
        if not revoked:
            return
        t0 = time.monotonic()
        io_sleep = loop_sleep(self._consumer)
        if commit:
            deadline = t0 + self.s.drain_timeout_s
            self.batcher.flush_now(True)
            while self.tracker.pending(revoked) > 0 and time.monotonic() < deadline:
                self._resend_failed()
                if io_sleep is not None:
                    await io_sleep(0.01)
                else:
                    time.sleep(0.01)
            self.batcher.flush_now(False)
            await self._commit_in_rebalance(self.tracker.committable(revoked))
        left = self.tracker.pending(revoked)
        self.tracker.revoke(revoked)
        for frame in self.batcher.drop(lambda f: f.ticket.partition not in revoked):
            self._finish(frame)
        for tp in revoked:
            try:
                self.metrics.lag.remove(f"{tp.topic}-{tp.partition}")
            except KeyError:
                pass
        self.metrics.assigned_partitions.set(len(self._owned() - revoked))
        self.log.info(
            "partitions_revoked" if commit else "partitions_lost",
            partitions=sorted(tp.partition for tp in revoked),
            left_uncommitted=left,
            drain_s=round(time.monotonic() - t0, 3),
        )

    async def _commit_in_rebalance(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit from inside a rebalance callback, while this member still owns the partitions.

        A blocking ``consumer.commit`` cannot run on the I/O loop; the coordinator's awaitable
        commit can (``inspector.runtime.kafka_internals``)."""
        if not offsets:
            return
        request = {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
        commit_async = rebalance_commit(self._consumer)
        try:
            if commit_async is not None:
                await commit_async(request, timeout_ms=5_000)
            else:  # other kafka-python versions: fire and hope it lands before the JoinGroup
                assert self._consumer is not None
                self._consumer.commit_async(request)
                return
        except Exception as exc:  # noqa: BLE001 - the frames stay uncommitted: duplicates, not loss
            self.log.warning("commit_failed", during="rebalance", error=type(exc).__name__, detail=str(exc)[:300])
            return
        self.tracker.mark_committed(offsets)
        self.metrics.commits.inc()

    # ------------------------------------------------------------------------------------------
    # inference thread
    # ------------------------------------------------------------------------------------------
    def _infer_loop(self) -> None:
        while True:
            batch = self.batcher.get(timeout=0.5)
            if batch is None:
                if self.batcher_closed_and_empty():
                    return
                continue
            try:
                self._run_batch(batch.model, batch.items, batch.waited_s)
            except Exception as exc:  # noqa: BLE001 - last resort: never lose the thread
                self.log.error("batch_failed", error=type(exc).__name__, detail=str(exc)[:500])
                for f in batch.items:
                    if not f.finished:
                        f.reject = Rejection.of_error(RejectReason.INTERNAL_ERROR, exc)
                        self._publish_rejected(f)

    def batcher_closed_and_empty(self) -> bool:
        return self.batcher.closed and len(self.batcher) == 0

    def _run_batch(self, model: str, items: list[Frame], waited_s: float) -> None:
        """One batch of one model: let stale frames go, look the engine up once, infer, publish."""
        frames, stale = split_stale(items, self.tracker.is_current)
        for f in stale:
            self._finish(f)  # partition revoked: the new owner reads it again
        if not frames:
            return
        engine = self.registry.get(model)  # one engine reference for the whole batch
        if engine is None:
            self._reject_all(frames, Rejection(RejectReason.UNKNOWN_MODEL, f"model {model!r} is no longer served"))
            return
        self.metrics.batch_size.labels(model).observe(len(frames))
        self.metrics.batch_wait.observe(waited_s)
        inspections = self._infer(model, engine, frames)
        if inspections is not None:
            self._publish_inspected(engine, frames, inspections)

    def _infer(self, model: str, engine: Engine, frames: list[Frame]) -> list[Inspection] | None:
        """The batch's inspections, or None when the engine failed (the frames are then rejected)."""
        t0 = time.perf_counter()
        try:
            inspections = engine.infer([f.image for f in frames])
        except Exception as exc:  # noqa: BLE001 - e.g. device OOM: reject this batch, keep serving
            self.log.error("inference_failed", model=model, batch=len(frames), error=type(exc).__name__,
                           detail=str(exc)[:300])
            self._reject_all(frames, Rejection.of_error(RejectReason.INFERENCE_ERROR, exc))
            return None
        self.metrics.inference.labels(model).observe(time.perf_counter() - t0)
        return inspections

    def _publish_inspected(self, engine: Engine, frames: list[Frame], inspections: Sequence[Inspection]) -> None:
        """Send each frame's verdict (its image let go first) and queue the heatmaps for Redis."""
        inferred_ms = _now_ms()
        heat: list[HeatmapItem] = []
        for f, insp in zip(frames, inspections, strict=True):
            self._drop_image(f)
            key = heatmap_key(f.headers.frame_id) if self.heatmaps is not None else None
            verdict = inspected_verdict(
                f, insp, engine, worker_id=self.s.worker_id, region_min_area=self.s.region_min_area,
                heatmap_key=key, inferred_at=inferred_ms, published_at=_now_ms(),
            )
            self._send_verdict(f, verdict, lambda f=f, k=verdict.verdict: self._done(f, k))
            if key is not None:
                heat.append(HeatmapItem(f.headers.frame_id, f.headers.camera_id, insp.heatmap, float(engine.region_threshold)))
        if self.heatmaps is not None:
            self.heatmaps.submit(heat)

    def _reject_all(self, frames: list[Frame], rejection: Rejection) -> None:
        for f in frames:
            f.reject = rejection
            self._publish_rejected(f)

    # ------------------------------------------------------------------------------------------
    # publishing and acknowledgements (any thread)
    # ------------------------------------------------------------------------------------------
    def _send_verdict(self, frame: Frame, verdict: Verdict, on_ok: Callable[[], None]) -> None:
        def on_err(exc: BaseException) -> None:
            self.metrics.publish_failures.inc()
            self.log.warning("verdict_send_failed", frame_id=frame.headers.frame_id, error=type(exc).__name__)
            self._retry.append((frame, verdict, on_ok, time.monotonic() + 0.5))

        self.verdicts.publish(verdict, on_ok, on_err)

    def _resend_failed(self) -> None:
        """Re-send verdicts whose delivery failed (consumer thread); offsets wait for them."""
        now = time.monotonic()
        for _ in range(len(self._retry)):
            frame, verdict, on_ok, when = self._retry.popleft()
            if when > now:
                self._retry.append((frame, verdict, on_ok, when))
                continue
            if frame.finished or not self.tracker.is_current(frame.ticket):
                self._finish(frame)
                continue
            self._send_verdict(frame, verdict, on_ok)

    def _publish_rejected(self, frame: Frame) -> None:
        rejection = frame.reject or Rejection(RejectReason.INTERNAL_ERROR, "")
        self.metrics.rejects.labels(rejection.reason.value).inc()
        engine = self.registry.get(frame.model) if frame.model else None
        now = _now_ms()
        verdict = rejected_verdict(frame, rejection, None if engine is None else engine.version,
                                   worker_id=self.s.worker_id, published_at=now)
        letter = dead_letter(frame, rejection, worker_id=self.s.worker_id, failed_at=now)
        countdown = _Countdown(2, lambda: self._done(frame, "rejected"))

        def dlq_ok() -> None:
            self.metrics.dlq.inc()
            countdown.tick()

        def dlq_err(exc: BaseException) -> None:
            # the verdict is the record of truth; a lost copy must not block the partition
            self.metrics.dlq_failures.inc()
            self.log.error("dead_letter_failed", frame_id=frame.headers.frame_id, error=type(exc).__name__)
            countdown.tick()

        self.log.info("frame_rejected", frame_id=frame.headers.frame_id, reason=rejection.reason.value,
                      partition=frame.partition, offset=frame.offset)
        self.dead_letters.publish(frame.key, frame.value, frame.raw_headers, letter, dlq_ok, dlq_err)
        frame.value = None
        self._send_verdict(frame, verdict, countdown.tick)

    def _done(self, frame: Frame, kind: str) -> None:
        """The frame's verdict (and dead-letter copy) is on the broker."""
        if self.tracker.ack(frame.ticket):
            latency = time.monotonic() - frame.received_mono
            self.metrics.latency.observe(latency)
            if frame.headers.captured_at is not None:
                self.metrics.e2e_latency.observe(max(0.0, _now_ms() - frame.headers.captured_at) / 1000.0)
        self.metrics.verdicts.labels(kind, frame.model or "").inc()
        self._finish(frame)

    def _finish(self, frame: Frame) -> None:
        with self._inflight_lock:
            if frame.finished:
                return
            frame.finished = True
            self._inflight_frames -= 1
            self._inflight_bytes -= frame.size
        self._drop_image(frame)
        frame.value = None

    def _drop_image(self, frame: Frame) -> None:
        """Let go of the decoded image and give its bytes back to the budget (once)."""
        frame.image = None
        with self._inflight_lock:
            held, frame.reserved = frame.reserved, 0
        if held:
            self._decoded.release(held)
