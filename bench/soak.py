"""Soak test: `inspector serve` under steady load for a long time, with workers SIGKILLed on a schedule.

1. Starts a local broker + Redis (``devtools.localstack``) unless --bootstrap/--redis-url are given,
   and uses --checkpoint (or trains a tiny RD model the way ``make demo`` does).
2. Measures saturation throughput: a burst estimate, then --saturation-seconds of frames offered
   faster than that, with the publisher and reader running beside the workers as in the soak.
3. Publishes JPEG frames at --rate-fraction of it for --duration seconds; every --kill-every seconds
   one worker is SIGKILLed and restarted at once (--workers 2: the other one takes over meanwhile).
4. Waits for the backlog, then reports frames sent, verdicts, duplicates, lost (must be 0), latency
   percentiles (captured-at → verdict read back), each restarted worker's start-up time (spawn →
   /readyz), and the RSS of every worker and the backlog sampled every --sample-every seconds.
   Writes ``soak.json`` and ``soak.png`` (RSS, latency and backlog over time) to --out.

    python bench/soak.py --out runs/soak-smoke --duration 120 --kill-every 40
    python bench/soak.py --out runs/soak-1h --duration 3600 --kill-every 180
    python bench/soak.py --out runs/mem-10min --rate-fraction 1.0 --kill-every 0 --duration 600  # memory check

The local broker is Apache Kafka (``devtools.localstack.LocalBroker``, one KRaft node); the soak's
frames topic gets a retention (--frames-retention-ms, 10 minutes) so that the broker's disk holds
a bounded window of frames, as in production. --bootstrap runs against any other Kafka.

Exit status 0 when no frame was lost, 1 otherwise. Not part of CI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from devtools.workers import ServeProcess
from inspector.contracts.wire import CAMERA_ID_HEADER, CAPTURED_AT_HEADER, CONTENT_TYPE_HEADER, FRAME_ID_HEADER
from inspector.pipeline.budget import rss_bytes


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_frames(size: int, count: int) -> list[bytes]:
    """Distinct JPEG frames of synthetic normal parts at ``size`` px, of the part the tiny model
    is trained on (``make_dataset(seed=0)``; frames use their own random stream, never copies)."""
    from trainer.synthetic import make_frame

    out = []
    for i in range(count):
        png = make_frame(None, size=size, seed=0, index=i, fmt="png")  # the seed of the training set
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        out.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def train_tiny(out: Path, image_size: int, epochs: int, data_size: int) -> Path:
    """A small RD model on synthetic parts rendered at the frames' size: the path ``make demo`` takes."""
    from trainer.fit import FitConfig, fit
    from trainer.synthetic import make_dataset

    data = make_dataset(out / "train-data", n_train=160, n_test_good=4, n_test_defect=4, size=data_size, seed=0)
    summary = fit(FitConfig(data=data, out=out / "checkpoint", method="rd", image_size=image_size,
                            epochs=epochs, val_fraction=0.2, progress=False, name="soak"))
    return Path(summary["checkpoint"])


@dataclass
class Topics:
    frames: str
    verdicts: str
    dlq: str
    models: str
    group: str

    @classmethod
    def create(cls, bootstrap: str, partitions: int, label: str, retention_ms: int = 600_000) -> Topics:
        tag = f"{label}-{uuid.uuid4().hex[:6]}"
        t = cls(f"soak-frames-{tag}", f"soak-verdicts-{tag}", f"soak-dlq-{tag}", f"soak-models-{tag}", f"soak-{tag}")
        from devtools.localstack import ensure_topics

        ensure_topics(bootstrap, frames=t.frames, verdicts=t.verdicts, dlq=t.dlq, normal=f"soak-normal-{tag}",
                      models=t.models, partitions=partitions, frames_retention_ms=retention_ms)
        return t


class WorkerSlot:
    """One worker position: an `inspector serve` subprocess that can be killed and restarted
    (each incarnation with its own worker id and log, on the slot's port)."""

    def __init__(self, slot: int, args: argparse.Namespace, stack_env: dict[str, str], topics: Topics,
                 logs: Path) -> None:
        from devtools.localstack import free_port

        self.slot = slot
        self.incarnation = 0
        self.port = free_port()
        self.logs = logs
        self.env = {
            **stack_env,
            "INSPECTOR_CHECKPOINT": str(args.checkpoint),
            "INSPECTOR_FRAMES_TOPIC": topics.frames,
            "INSPECTOR_VERDICTS_TOPIC": topics.verdicts,
            "INSPECTOR_DLQ_TOPIC": topics.dlq,
            "INSPECTOR_MODELS_TOPIC": topics.models,
            "INSPECTOR_GROUP_ID": topics.group,
            "INSPECTOR_MAX_BATCH": str(args.batch),
            "INSPECTOR_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "INSPECTOR_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
            "INSPECTOR_ROLLOUT_CATCHUP_S": "1",
            "INSPECTOR_LOG_LEVEL": args.worker_log_level,
            "INSPECTOR_DEVICE": args.device,
            "INSPECTOR_ONNX_CACHE_DIR": str(args.out / "onnx-cache"),
        }
        if args.torch_threads:
            self.env["INSPECTOR_TORCH_THREADS"] = str(args.torch_threads)
        self.proc: ServeProcess | None = None
        self.ready_after: float | None = None  # seconds from spawn to /readyz 200 (None: not yet)
        self._next_probe = 0.0

    @property
    def name(self) -> str:
        return f"w{self.slot}-{self.incarnation}"

    @property
    def spawned_at(self) -> float:
        """time.monotonic() of the current incarnation's spawn (0 before the first)."""
        return 0.0 if self.proc is None or self.proc.started_at is None else self.proc.started_at

    def start(self) -> WorkerSlot:
        self.incarnation += 1
        self.ready_after, self._next_probe = None, 0.0
        self.proc = ServeProcess(self.logs / f"{self.name}.log", {**self.env, "INSPECTOR_WORKER_ID": self.name},
                                 port=self.port, name=self.name).start()
        return self

    def poll_ready(self) -> float | None:
        """Start-up time (s) the first time /readyz answers 200 after a spawn, else None. Probes
        at most twice a second, so the soak loop can call it every turn."""
        now = time.monotonic()
        if self.ready_after is not None or now < self._next_probe or self.pid is None or self.proc is None:
            return None
        self._next_probe = now + 0.5
        if not self.proc.ready():
            return None
        self.ready_after = time.monotonic() - self.spawned_at
        return self.ready_after

    def wait_ready(self, timeout: float = 180) -> None:
        if self.proc is None:
            raise RuntimeError(f"worker slot {self.slot} was never started")
        took = self.proc.wait_ready(timeout)
        self.ready_after = self.ready_after or took

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def stop(self, timeout: float = 60) -> int | None:
        return None if self.proc is None else self.proc.stop(timeout)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid


@dataclass
class Collected:
    """Verdicts read back: first arrival per frame, all frame ids seen (with repeats)."""

    arrivals: dict[str, float] = field(default_factory=dict)  # frame id -> first read (epoch ms)
    first: dict[str, dict] = field(default_factory=dict)  # frame id -> first verdict
    counts: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class VerdictReader(threading.Thread):
    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        super().__init__(daemon=True, name="verdict-reader")
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                      fetch_max_wait_ms=20, enable_auto_commit=False)
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.got = Collected()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for recs in self.consumer.poll(timeout_ms=100).values():
                now = time.time() * 1000
                with self.got.lock:
                    for r in recs:
                        v = json.loads(r.value)
                        fid = v["frame_id"]
                        self.got.counts[fid] += 1
                        if fid not in self.got.arrivals:
                            self.got.arrivals[fid] = now
                            self.got.first[fid] = v
        self.consumer.close()

    def answered(self, ids: list[str]) -> int:
        with self.got.lock:
            return sum(1 for f in ids if f in self.got.arrivals)


class Publisher(threading.Thread):
    """Publishes frames round-robin over cameras at ``rate``/s (0: as fast as possible) until
    ``count`` frames are sent or ``until`` (monotonic) passes."""

    def __init__(self, bootstrap: str, topic: str, frames: list[bytes], prefix: str, rate: float,
                 cameras: int, count: int | None = None, until: float | None = None) -> None:
        super().__init__(daemon=True, name="publisher")
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0 if rate else 5,
                                      max_request_size=64 << 20)
        self.topic, self.frames, self.prefix, self.rate = topic, frames, prefix, rate
        self.cameras, self.count, self.until = cameras, count, until
        self.sent: list[str] = []
        self.sent_at: dict[str, float] = {}  # frame id -> captured-at (epoch ms)
        self.failed = 0

    def run(self) -> None:
        t0 = time.perf_counter()
        i = 0
        while (self.count is None or i < self.count) and (self.until is None or time.monotonic() < self.until):
            if self.rate:
                delay = t0 + i / self.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            cam = f"cam-{i % self.cameras}"
            fid = f"{self.prefix}-{i:07d}"
            now_ms = int(time.time() * 1000)
            fut = self.producer.send(self.topic, key=cam.encode(), value=self.frames[i % len(self.frames)],
                                     headers=[(FRAME_ID_HEADER, fid.encode()), (CAMERA_ID_HEADER, cam.encode()),
                                              (CAPTURED_AT_HEADER, str(now_ms).encode()),
                                              (CONTENT_TYPE_HEADER, b"image/jpeg")])
            fut.add_errback(lambda _e: self._fail())
            self.sent.append(fid)
            self.sent_at[fid] = now_ms
            i += 1
        self.producer.flush()
        self.producer.close()

    def _fail(self) -> None:
        self.failed += 1


@contextlib.contextmanager
def local_stack(bootstrap: str | None, redis_url: str | None, run_dir: Path):
    """Environment for the workers, and the pid of the local broker (None when --bootstrap names one)."""
    with contextlib.ExitStack() as stack:
        broker_pid = None
        if bootstrap is None or redis_url is None:
            from devtools.localstack import LocalBroker, LocalRedis

            if bootstrap is None:
                broker = stack.enter_context(LocalBroker(run_dir=run_dir))
                bootstrap, broker_pid = broker.bootstrap, broker.pid
            if redis_url is None:
                redis_url = stack.enter_context(LocalRedis(run_dir=run_dir)).url
        yield {"INSPECTOR_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "INSPECTOR_REDIS_URL": redis_url}, broker_pid


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc); 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class Group:
    """One run's topics, its workers (started and ready) and a reader of its verdicts."""

    def __init__(self, args: argparse.Namespace, env: dict[str, str], label: str) -> None:
        self.args = args
        self.bootstrap = env["INSPECTOR_KAFKA_BOOTSTRAP_SERVERS"]
        self.topics = Topics.create(self.bootstrap, args.partitions, label, args.frames_retention_ms)
        self.slots = [WorkerSlot(k, args, env, self.topics, args.out / "logs") for k in range(args.workers)]
        for w in self.slots:
            w.start()
        for w in self.slots:
            w.wait_ready()
        self.reader = VerdictReader(self.bootstrap, self.topics.verdicts, args.partitions)
        self.reader.start()

    def publish(self, frames: list[bytes], prefix: str, rate: float, **limits: float) -> Publisher:
        pub = Publisher(self.bootstrap, self.topics.frames, frames, prefix, rate, self.args.cameras, **limits)
        pub.start()
        return pub

    def wait_answered(self, ids: list[str], timeout: float, every: float = 0.2, tick=None) -> None:
        deadline = time.monotonic() + timeout
        while self.reader.answered(ids) < len(ids) and time.monotonic() < deadline:
            if tick is not None:
                tick(time.monotonic())
            time.sleep(every)

    def close(self) -> dict[str, int | None]:
        codes = {w.name: w.stop() for w in self.slots}
        self.reader.stop.set()
        self.reader.join(10)
        return codes


def saturation(args: argparse.Namespace, env: dict[str, str], frames: list[bytes]) -> dict:
    """Verdicts per second the workers sustain while frames come faster than they can answer.

    A burst (every frame published at once) gives a first figure with the workers alone on the
    cores; then frames are published at 1.3x that rate for --saturation-seconds, the publisher
    and reader running beside the workers as they do during the soak, and the verdicts read in
    the last two thirds of that window give the saturation the soak's load is a fraction of."""
    g = Group(args, env, "sat")
    try:
        burst = g.publish(frames, "burst", 0, count=args.saturation_frames)
        burst.join()
        g.wait_answered(burst.sent, max(120.0, args.saturation_frames / 4))
        got = [g.reader.got.first[f] for f in burst.sent if f in g.reader.got.first]
        if len(got) < len(burst.sent) // 2:
            raise RuntimeError(f"saturation run: only {len(got)}/{len(burst.sent)} verdicts")
        span = (max(v["timings"]["published_at"] for v in got) - min(v["timings"]["received_at"] for v in got)) / 1000
        burst_rate = len(got) / max(1e-3, span)
        offered = 1.3 * burst_rate
        t0 = time.time() * 1000
        paced = g.publish(frames, "paced", offered, until=time.monotonic() + args.saturation_seconds)
        paced.join()
        lo, hi = t0 + args.saturation_seconds * 1000 / 3, t0 + args.saturation_seconds * 1000
        with g.reader.got.lock:
            n = sum(1 for f in paced.sent if lo <= g.reader.got.arrivals.get(f, -1) < hi)
        return {"burst_per_s": round(burst_rate, 1), "offered_per_s": round(offered, 1),
                "sustained_per_s": round(n / ((hi - lo) / 1000), 1)}
    finally:
        g.close()


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    a = np.asarray(values)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3, ax4) = plt.subplots(4, 1, figsize=(11, 11), sharex=True)
    by_slot: dict[int, list[tuple[float, float]]] = {}
    for s in result["rss_samples"]:
        by_slot.setdefault(s["slot"], []).append((s["t_s"], s["rss_mb"]))
    for slot, pts in sorted(by_slot.items()):
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], ".-", ms=3, label=f"worker slot {slot}")
    for k in result["kills"]:
        for ax in (ax1, ax2, ax3, ax4):
            ax.axvline(k["t_s"], color="red", alpha=0.3, lw=1)
    ax1.set_ylabel("RSS (MB)")
    ax1.legend(loc="upper left")
    ax1.set_title(f"soak: {result['frames_sent']} frames at {result['rate_per_s']:.1f}/s, "
                  f"{len(result['kills'])} SIGKILLs (red), lost {result['lost']}, dups {result['duplicates']}")
    lat = result["latency_series"]
    ax2.plot([p[0] for p in lat], [p[1] / 1000 for p in lat], ".", ms=2)
    ax2.set_yscale("log")
    ax2.set_ylabel("latency (s, captured → verdict read)")
    backlog = result["backlog_samples"]
    ax3.plot([b[0] for b in backlog], [b[1] for b in backlog], "-")
    ax3.set_ylabel("frames without a verdict yet")
    brk = result.get("broker_samples") or []
    ax4.plot([b[0] for b in brk], [b[1] for b in brk], "-", color="tab:purple")
    ax4.set_ylabel("broker CPU (% of a core)")
    ax4.set_xlabel("time since start of load (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def soak(args: argparse.Namespace, env: dict[str, str], frames: list[bytes], rate: float,
         broker_pid: int | None = None) -> dict:
    g = Group(args, env, "soak")
    startups = [{"worker": w.name, "t_s": 0.0, "ready_s": round(w.ready_after or 0, 2)} for w in g.slots]
    t0 = time.monotonic()
    pub = g.publish(frames, "soak", rate, until=t0 + args.duration)
    samples: list[dict] = []
    backlog: list[tuple[float, int]] = []
    broker: list[tuple[float, float, float]] = []  # t, CPU (% of one core) since the last sample, RSS MB
    last_cpu = (t0, cpu_seconds(broker_pid))
    kills: list[dict] = []
    next_sample = t0
    next_kill = t0 + args.kill_every if args.kill_every > 0 else float("inf")
    victim = 0

    def tick(now: float) -> None:
        nonlocal next_sample, next_kill, victim, last_cpu
        for w in g.slots:
            if (took := w.poll_ready()) is not None:
                startups.append({"worker": w.name, "t_s": round(w.spawned_at - t0, 2), "ready_s": round(took, 2)})
                log(f"{w.name} ready {took:.1f} s after its start")
        if now >= next_sample:
            for w in g.slots:
                if w.pid:
                    samples.append({"t_s": round(now - t0, 2), "slot": w.slot, "worker": w.name, "pid": w.pid,
                                    "rss_mb": round(rss_bytes(w.pid) / 2**20, 1)})
            with g.reader.got.lock:
                backlog.append((round(now - t0, 2), len(pub.sent) - len(g.reader.got.arrivals)))
            if broker_pid is not None:
                cpu = cpu_seconds(broker_pid)
                share = 100 * (cpu - last_cpu[1]) / max(1e-3, now - last_cpu[0])
                broker.append((round(now - t0, 2), round(share, 1), round(rss_bytes(broker_pid) / 2**20, 1)))
                last_cpu = (now, cpu)
            next_sample += args.sample_every
        if now >= next_kill and pub.is_alive():
            w = g.slots[victim % len(g.slots)]
            victim += 1
            old = w.name
            w.kill()
            w.start()
            kills.append({"t_s": round(now - t0, 2), "killed": old, "restarted_as": w.name})
            log(f"t={now - t0:.0f}s SIGKILL {old}, restarted as {w.name}; backlog {backlog[-1][1] if backlog else 0}")
            next_kill += args.kill_every

    while pub.is_alive():
        tick(time.monotonic())
        time.sleep(0.05)
    pub.join()
    log(f"published {len(pub.sent)} frames; waiting for the backlog")
    g.wait_answered(pub.sent, args.drain_timeout, tick=tick)
    time.sleep(2.0)  # late duplicates of the last frames
    exit_codes = g.close()

    got = g.reader.got
    sent = pub.sent
    answered = [f for f in sent if f in got.arrivals]
    latencies = [got.arrivals[f] - pub.sent_at[f] for f in answered]
    first_ms = pub.sent_at[sent[0]] if sent else 0
    verdict_kinds = Counter(got.first[f]["verdict"] for f in answered)
    per_slot: dict[str, dict] = {}
    for s in samples:
        d = per_slot.setdefault(f"slot{s['slot']}", {"start_mb": s["rss_mb"], "samples": 0})
        d["end_mb"] = s["rss_mb"]
        d["max_mb"] = max(d.get("max_mb", 0.0), s["rss_mb"])
        d["samples"] += 1
    restarts = [x["ready_s"] for x in startups[len(g.slots):]]
    return {
        "frames_sent": len(sent),
        "publish_failures": pub.failed,
        "verdicts": sum(got.counts[f] for f in sent),
        "answered": len(answered),
        "duplicates": sum(got.counts[f] - 1 for f in sent if got.counts[f] > 1),
        "duplicated_frames": sum(1 for f in sent if got.counts[f] > 1),
        "lost": len(sent) - len(answered),
        "verdict_kinds": dict(verdict_kinds),
        "rate_per_s": rate,
        "duration_s": args.duration,
        "latency_ms": percentiles(latencies),
        "latency_series": [[round((pub.sent_at[f] - first_ms) / 1000, 2), round(got.arrivals[f] - pub.sent_at[f], 1)]
                           for f in answered],
        "kills": kills,
        "startups": startups,
        "restart_ready_s": percentiles(restarts) | {"n": len(restarts)},
        "max_backlog": max((b[1] for b in backlog), default=0),
        "broker_samples": broker,
        "backlog_samples": backlog,
        "rss_samples": samples,
        "rss_mb": per_slot,
        "worker_exit_codes": exit_codes,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for soak.json, soak.png and worker logs")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: train a tiny one into --out")
    p.add_argument("--duration", type=float, default=3600.0, help="seconds of load")
    p.add_argument("--kill-every", type=float, default=180.0, help="SIGKILL a worker every N s (0: never)")
    p.add_argument("--workers", type=int, default=1, help="workers in the group (the killed one alternates)")
    p.add_argument("--rate-fraction", type=float, default=0.7, help="load as a fraction of saturation")
    p.add_argument("--rate", type=float, default=None, help="fixed frames/s (skips the saturation run)")
    p.add_argument("--saturation-frames", type=int, default=400, help="frames of the burst estimate")
    p.add_argument("--saturation-seconds", type=float, default=45.0,
                   help="seconds of paced over-load that give the sustained saturation")
    p.add_argument("--size", type=int, default=256, help="frame side (px), JPEG")
    p.add_argument("--distinct-frames", type=int, default=32)
    p.add_argument("--partitions", type=int, default=32,
                   help="frames topic partitions")
    p.add_argument("--frames-retention-ms", type=int, default=600_000,
                   help="retention of the soak's frames topic (the broker deletes older segments)")
    p.add_argument("--cameras", type=int, default=32, help="camera ids (message keys) the frames spread over")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--torch-threads", type=int, default=None)
    p.add_argument("--sample-every", type=float, default=5.0, help="RSS sampling period (s)")
    p.add_argument("--worker-log-level", default="WARNING", help="INSPECTOR_LOG_LEVEL of the workers")
    p.add_argument("--drain-timeout", type=float, default=300.0, help="wait this long for the backlog")
    p.add_argument("--train-image-size", type=int, default=64)
    p.add_argument("--train-epochs", type=int, default=8)
    p.add_argument("--bootstrap", default=None)
    p.add_argument("--redis-url", default=None)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: local services are stopped
    args.out = args.out.resolve()
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with local_stack(args.bootstrap, args.redis_url, args.out / "services") as (env, broker_pid):
        if args.checkpoint is None:
            log(f"training a tiny checkpoint ({args.train_image_size} px, {args.train_epochs} epochs)")
            args.checkpoint = train_tiny(args.out, args.train_image_size, args.train_epochs, args.size)
        args.checkpoint = args.checkpoint.resolve()
        frames = make_frames(args.size, args.distinct_frames)
        sat = None
        if args.rate is None:
            log(f"saturation run: {args.saturation_frames} frames at once, {args.workers} worker(s)")
            sat = saturation(args, env, frames)
            rate = args.rate_fraction * sat["sustained_per_s"]
            log(f"saturation {sat} frames/s -> load {rate:.1f} frames/s for {args.duration:.0f} s")
        else:
            rate = args.rate
        result = soak(args, env, frames, rate, broker_pid)
    result["saturation_per_s"] = sat
    result["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result["wall_s"] = round(time.monotonic() - started, 1)
    (args.out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / "soak.png")
    lat = result["latency_ms"]
    summary = {k: result[k] for k in ("frames_sent", "verdicts", "duplicates", "lost", "verdict_kinds",
                                       "rate_per_s", "saturation_per_s", "max_backlog", "rss_mb",
                                       "worker_exit_codes")}
    summary["restart_ready_s"] = {k: None if v is None else round(v, 1) for k, v in result["restart_ready_s"].items()}
    summary["kills"] = len(result["kills"])
    summary["latency_ms"] = {k: None if v is None else round(v, 1) for k, v in lat.items()}
    print(json.dumps(summary))
    log(f"wrote {args.out / 'soak.json'} and {args.out / 'soak.png'}")
    return 0 if result["lost"] == 0 and result["frames_sent"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
