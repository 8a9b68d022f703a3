"""Soak test: `inspector serve` under steady load for a long time, with workers SIGKILLed on a schedule.

1. Starts a local broker + Redis (``inspector.localstack``) unless --bootstrap/--redis-url are given,
   and uses --checkpoint (or trains a tiny RD model the way ``make demo`` does).
2. Measures saturation throughput (all of --saturation-frames published at once).
3. Publishes JPEG frames at --rate-fraction of it for --duration seconds; every --kill-every seconds
   one worker is SIGKILLed and restarted at once (--workers 2: the other one takes over meanwhile).
4. Waits for the backlog, then reports frames sent, verdicts, duplicates, lost (must be 0), latency
   percentiles (captured-at → verdict read back) and the RSS of every worker sampled every
   --sample-every seconds. Writes ``soak.json`` and ``soak.png`` (RSS and latency over time) to --out.

    python bench/soak.py --out runs/soak-smoke --duration 120 --kill-every 40
    python bench/soak.py --out runs/soak-1h --duration 3600 --kill-every 60 --workers 2
    python bench/soak.py --out runs/mem-10min --rate-fraction 1.0 --kill-every 0 --duration 600  # memory check

Exit status 0 when no frame was lost, 1 otherwise. Not part of CI.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def make_frames(size: int, count: int) -> list[bytes]:
    """Distinct JPEG frames of synthetic normal parts at ``size`` px."""
    from trainer.synthetic import make_frame

    out = []
    for i in range(count):
        png = make_frame(None, size=size, seed=1, index=i, fmt="png")
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        out.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def train_tiny(out: Path, image_size: int, epochs: int, data_size: int) -> Path:
    """A small RD model on synthetic parts rendered at the frames' size: the path ``make demo`` takes."""
    from trainer.fit import FitConfig, fit
    from trainer.synthetic import make_dataset

    data = make_dataset(out / "train-data", n_train=64, n_test_good=4, n_test_defect=4, size=data_size, seed=0)
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
    def create(cls, bootstrap: str, partitions: int, label: str) -> Topics:
        tag = f"{label}-{uuid.uuid4().hex[:6]}"
        t = cls(f"soak-frames-{tag}", f"soak-verdicts-{tag}", f"soak-dlq-{tag}", f"soak-models-{tag}", f"soak-{tag}")
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_topics([NewTopic(t.frames, partitions, 1), NewTopic(t.verdicts, partitions, 1),
                                 NewTopic(t.dlq, 1, 1),
                                 NewTopic(t.models, 1, 1, topic_configs={"cleanup.policy": "compact"})])
        finally:
            admin.close()
        return t


class WorkerSlot:
    """One worker position: a `inspector serve` subprocess that can be killed and restarted."""

    def __init__(self, slot: int, args: argparse.Namespace, stack_env: dict[str, str], topics: Topics,
                 logs: Path) -> None:
        from inspector.localstack import free_port

        self.slot = slot
        self.incarnation = 0
        self.port = free_port()
        self.logs = logs
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            **stack_env,
            "INSPECTOR_CHECKPOINT": str(args.checkpoint),
            "INSPECTOR_FRAMES_TOPIC": topics.frames,
            "INSPECTOR_VERDICTS_TOPIC": topics.verdicts,
            "INSPECTOR_DLQ_TOPIC": topics.dlq,
            "INSPECTOR_MODELS_TOPIC": topics.models,
            "INSPECTOR_GROUP_ID": topics.group,
            "INSPECTOR_HTTP_PORT": str(self.port),
            "INSPECTOR_MAX_BATCH": str(args.batch),
            "INSPECTOR_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "INSPECTOR_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
            "INSPECTOR_ROLLOUT_CATCHUP_S": "1",
            "INSPECTOR_LOG_LEVEL": args.worker_log_level,
            "INSPECTOR_DEVICE": args.device,
        }
        if args.torch_threads:
            self.env["INSPECTOR_TORCH_THREADS"] = str(args.torch_threads)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file = None

    @property
    def name(self) -> str:
        return f"w{self.slot}-{self.incarnation}"

    def start(self) -> WorkerSlot:
        self.incarnation += 1
        self._log_file = open(self.logs / f"{self.name}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "inspector.cli", "serve"], cwd=REPO,
            env={**self.env, "INSPECTOR_WORKER_ID": self.name}, stdout=self._log_file, stderr=subprocess.STDOUT,
        )
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:  # noqa: S310
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited; see {self.logs / (self.name + '.log')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} not ready after {timeout} s")
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self._log_file:
            self._log_file.close()

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log_file:
            self._log_file.close()
        return self.proc.returncode

    @property
    def pid(self) -> int | None:
        return None if self.proc is None or self.proc.poll() is not None else self.proc.pid


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
                                     headers=[("frame-id", fid.encode()), ("camera-id", cam.encode()),
                                              ("captured-at", str(now_ms).encode()),
                                              ("content-type", b"image/jpeg")])
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
    with contextlib.ExitStack() as stack:
        if bootstrap is None or redis_url is None:
            from inspector.localstack import LocalBroker, LocalRedis

            if bootstrap is None:
                bootstrap = stack.enter_context(LocalBroker(run_dir=run_dir)).bootstrap
            if redis_url is None:
                redis_url = stack.enter_context(LocalRedis(run_dir=run_dir)).url
        yield {"INSPECTOR_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "INSPECTOR_REDIS_URL": redis_url}


def saturation(args: argparse.Namespace, env: dict[str, str], frames: list[bytes]) -> float:
    """Verdicts per second with every frame published at once (the same number of workers)."""
    bootstrap = env["INSPECTOR_KAFKA_BOOTSTRAP_SERVERS"]
    topics = Topics.create(bootstrap, args.partitions, "sat")
    slots = [WorkerSlot(k, args, env, topics, args.out / "logs") for k in range(args.workers)]
    for w in slots:
        w.start()
    for w in slots:
        w.wait_ready()
    reader = VerdictReader(bootstrap, topics.verdicts, args.partitions)
    reader.start()
    pub = Publisher(bootstrap, topics.frames, frames, "sat", 0, args.cameras, count=args.saturation_frames)
    pub.start()
    pub.join()
    deadline = time.monotonic() + max(120.0, args.saturation_frames)
    while reader.answered(pub.sent) < len(pub.sent) and time.monotonic() < deadline:
        time.sleep(0.2)
    reader.stop.set()
    reader.join(10)
    for w in slots:
        w.stop()
    got = [reader.got.first[f] for f in pub.sent if f in reader.got.first]
    if len(got) < len(pub.sent) // 2:
        raise RuntimeError(f"saturation run: only {len(got)}/{len(pub.sent)} verdicts")
    first_in = min(v["timings"]["received_at"] for v in got)
    last_out = max(v["timings"]["published_at"] for v in got)
    return len(got) / max(1e-3, (last_out - first_in) / 1000.0)


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

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    by_slot: dict[int, list[tuple[float, float]]] = {}
    for s in result["rss_samples"]:
        by_slot.setdefault(s["slot"], []).append((s["t_s"], s["rss_mb"]))
    for slot, pts in sorted(by_slot.items()):
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], ".-", ms=3, label=f"worker slot {slot}")
    for k in result["kills"]:
        ax1.axvline(k["t_s"], color="red", alpha=0.3, lw=1)
        ax2.axvline(k["t_s"], color="red", alpha=0.3, lw=1)
    ax1.set_ylabel("RSS (MB)")
    ax1.legend(loc="upper left")
    ax1.set_title(f"soak: {result['frames_sent']} frames at {result['rate_per_s']:.1f}/s, "
                  f"{len(result['kills'])} SIGKILLs (red), lost {result['lost']}, dups {result['duplicates']}")
    lat = result["latency_series"]
    ax2.plot([p[0] for p in lat], [p[1] / 1000 for p in lat], ".", ms=2)
    ax2.set_yscale("log")
    ax2.set_ylabel("latency (s, captured → verdict read)")
    ax2.set_xlabel("time since start of load (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def soak(args: argparse.Namespace, env: dict[str, str], frames: list[bytes], rate: float) -> dict:
    bootstrap = env["INSPECTOR_KAFKA_BOOTSTRAP_SERVERS"]
    topics = Topics.create(bootstrap, args.partitions, "soak")
    slots = [WorkerSlot(k, args, env, topics, args.out / "logs") for k in range(args.workers)]
    for w in slots:
        w.start()
    for w in slots:
        w.wait_ready()
    reader = VerdictReader(bootstrap, topics.verdicts, args.partitions)
    reader.start()
    t0 = time.monotonic()
    pub = Publisher(bootstrap, topics.frames, frames, "soak", rate, args.cameras, until=t0 + args.duration)
    pub.start()
    samples: list[dict] = []
    kills: list[dict] = []
    next_sample = t0
    next_kill = t0 + args.kill_every if args.kill_every > 0 else float("inf")
    victim = 0
    while pub.is_alive():
        now = time.monotonic()
        if now >= next_sample:
            for w in slots:
                if w.pid:
                    samples.append({"t_s": round(now - t0, 2), "slot": w.slot, "worker": w.name, "pid": w.pid,
                                    "rss_mb": round(rss_bytes(w.pid) / 2**20, 1)})
            next_sample += args.sample_every
        if now >= next_kill:
            w = slots[victim % len(slots)]
            victim += 1
            old = w.name
            w.kill()
            w.start()
            kills.append({"t_s": round(now - t0, 2), "killed": old, "restarted_as": w.name})
            log(f"t={now - t0:.0f}s SIGKILL {old}, restarted as {w.name}")
            next_kill += args.kill_every
        time.sleep(0.05)
    pub.join()
    log(f"published {len(pub.sent)} frames; waiting for the backlog")
    deadline = time.monotonic() + args.drain_timeout
    while reader.answered(pub.sent) < len(pub.sent) and time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_sample:
            for w in slots:
                if w.pid:
                    samples.append({"t_s": round(now - t0, 2), "slot": w.slot, "worker": w.name, "pid": w.pid,
                                    "rss_mb": round(rss_bytes(w.pid) / 2**20, 1)})
            next_sample += args.sample_every
        time.sleep(0.2)
    time.sleep(2.0)  # late duplicates of the last frames
    exit_codes = {w.name: w.stop() for w in slots}
    reader.stop.set()
    reader.join(10)

    got = reader.got
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
        "rss_samples": samples,
        "rss_mb": per_slot,
        "worker_exit_codes": exit_codes,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for soak.json, soak.png and worker logs")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: train a tiny one into --out")
    p.add_argument("--duration", type=float, default=3600.0, help="seconds of load")
    p.add_argument("--kill-every", type=float, default=60.0, help="SIGKILL a worker every N s (0: never)")
    p.add_argument("--workers", type=int, default=1, help="workers in the group (the killed one alternates)")
    p.add_argument("--rate-fraction", type=float, default=0.7, help="load as a fraction of saturation")
    p.add_argument("--rate", type=float, default=None, help="fixed frames/s (skips the saturation run)")
    p.add_argument("--saturation-frames", type=int, default=400)
    p.add_argument("--size", type=int, default=256, help="frame side (px), JPEG")
    p.add_argument("--distinct-frames", type=int, default=32)
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--cameras", type=int, default=4)
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
    with local_stack(args.bootstrap, args.redis_url, args.out / "services") as env:
        if args.checkpoint is None:
            log(f"training a tiny checkpoint ({args.train_image_size} px, {args.train_epochs} epochs)")
            args.checkpoint = train_tiny(args.out, args.train_image_size, args.train_epochs, args.size)
        args.checkpoint = args.checkpoint.resolve()
        frames = make_frames(args.size, args.distinct_frames)
        sat = None
        if args.rate is None:
            log(f"saturation run: {args.saturation_frames} frames at once, {args.workers} worker(s)")
            sat = saturation(args, env, frames)
            rate = args.rate_fraction * sat
            log(f"saturation {sat:.1f} frames/s -> load {rate:.1f} frames/s for {args.duration:.0f} s")
        else:
            rate = args.rate
        result = soak(args, env, frames, rate)
    result["saturation_per_s"] = sat
    result["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result["wall_s"] = round(time.monotonic() - started, 1)
    (args.out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / "soak.png")
    lat = result["latency_ms"]
    summary = {k: result[k] for k in ("frames_sent", "verdicts", "duplicates", "lost", "verdict_kinds",
                                       "rate_per_s", "saturation_per_s", "rss_mb", "worker_exit_codes")}
    summary["kills"] = len(result["kills"])
    summary["latency_ms"] = {k: None if v is None else round(v, 1) for k, v in lat.items()}
    print(json.dumps(summary))
    log(f"wrote {args.out / 'soak.json'} and {args.out / 'soak.png'}")
    return 0 if result["lost"] == 0 and result["frames_sent"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
