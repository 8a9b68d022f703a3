"""The GPU check, prepared to run in one call when a GPU is lent (minutes of device time).

For RD and DSKD with efficientnet_lite0 (pretrained) and wide_resnet50_2 / resnet18 (randomly
initialised teachers: **speed figures only**, said in every row), the Engine's throughput for
fp32, bf16 and compiled bf16 (torch, channels-last) at batch sizes 1-256: images/s, p50/p99
ms per batch, peak GPU memory, achieved GFLOP/s against the measured bf16 and fp32 matmul
ceilings. Then end-to-end service throughput and latency through a broker (`--bootstrap`, or
the local Apache Kafka when Java is there) with `bench/service_bench.py`, on the lite0 RD model.

``--dry-run`` runs every step on the CPU at toy sizes (64 px, batch 1-2, a fraction of a second
per row, no compile) so CI checks that the script works end to end; its figures mean nothing.

    bash bench/gpu_check.sh --out runs/gpu               # on the GPU machine (installs the project)
    python bench/gpu_check.py --dry-run --out runs/gpu-dry  # CI, on the CPU
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

MODELS = [  # (method, teacher, pretrained)
    ("rd", "efficientnet_lite0", True),
    ("dskd", "efficientnet_lite0", True),
    ("rd", "wide_resnet50_2", False),
    ("dskd", "resnet18", False),
]


def matmul_ceiling(device: torch.device, dtype: torch.dtype, n: int, seconds: float) -> float:
    """GFLOP/s of an n×n matmul, the best of repeated runs."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(method: str, teacher_name: str, pretrained: bool, size: int):
    """Untrained students on a teacher (speed does not depend on the weights), and a manifest."""
    from inspector.model.checkpoint import Manifest
    from inspector.model.nets.model import DiscrepancyModel, ModelConfig, build_student
    from inspector.model.nets.teachers import build_teacher, build_untrained_teacher

    teacher = build_teacher(teacher_name) if pretrained else build_untrained_teacher(teacher_name)
    config = ModelConfig(method=method)
    model = DiscrepancyModel(teacher, build_student(config, teacher), config)
    manifest = Manifest(name=f"{method}-{teacher_name}", version="gpu-check", method=method, teacher=teacher_name,
                        teacher_sha256=teacher.weights_sha256, image_size=size, mean=teacher.spec.mean,
                        std=teacher.spec.std, threshold=1.0, target_frr=0.005)
    return model, manifest


def build_engine(method: str, teacher_name: str, pretrained: bool, size: int, device: torch.device, plan):
    from inspector.engine.engine import DiscrepancyEngine, EngineOptions

    model, manifest = build_model(method, teacher_name, pretrained, size)
    return DiscrepancyEngine(model, manifest, device, EngineOptions(plan=plan))  # an explicit plan never falls back


def flops_per_image(engine, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, size, size, device=engine.device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        engine.model.maps_and_scores(x)
    return float(counter.get_total_flops())


def measure(engine, size: int, batch: int, seconds: float) -> dict:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch)]
    engine.infer(frames)  # warm-up (a compiled model compiles here)
    if engine.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(engine.device)
    times = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(times) < 3:
        t0 = time.perf_counter()
        engine.infer(frames)
        _sync(engine.device)
        times.append(time.perf_counter() - t0)
    out = {"batch": batch, "images_per_s": round(batch * len(times) / sum(times), 1),
           "p50_ms": round(1000 * float(np.percentile(times, 50)), 2),
           "p99_ms": round(1000 * float(np.percentile(times, 99)), 2), "batches": len(times)}
    if engine.device.type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(engine.device) / 2**20, 1)
    return out


def engine_rows(args, device: torch.device, ceilings: dict) -> list[dict]:
    from inspector.engine.backends.plan import ExecutionPlan

    configs = {"fp32": ExecutionPlan("torch", "fp32", True), "bf16": ExecutionPlan("torch", "bf16", True)}
    if not args.dry_run:
        configs["compiled-bf16"] = ExecutionPlan("torch", "bf16", True, compile=True)
    rows = []
    for method, teacher, pretrained in MODELS:
        for name, plan in configs.items():
            if name != "fp32" and device.type == "cpu" and not args.dry_run:
                continue
            try:
                engine = build_engine(method, teacher, pretrained, args.size, device, plan)
                gflop = flops_per_image(engine, args.size) / 1e9
            except Exception as exc:  # noqa: BLE001 - one broken row must not end the check
                rows.append({"method": method, "teacher": teacher, "config": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
                print(f"{method:4} {teacher:18} {name:13} ERROR {rows[-1]['error']}", flush=True)
                continue
            for batch in args.batch_sizes:
                try:
                    r = measure(engine, args.size, batch, args.seconds)
                except torch.OutOfMemoryError:
                    r = {"batch": batch, "error": "out of memory"}
                ceiling = ceilings["bf16" if "bf16" in name else "fp32"]
                if "images_per_s" in r:
                    r["gflop_per_image"] = round(gflop, 3)
                    r["achieved_gflop_s"] = round(gflop * r["images_per_s"], 1)
                    r["share_of_matmul_ceiling"] = round(r["achieved_gflop_s"] / ceiling, 3) if ceiling else None
                r.update(method=method, teacher=teacher, config=name, image_size=args.size,
                         teacher_weights="pretrained" if pretrained else "random (speed only)")
                rows.append(r)
                print(f"{method:4} {teacher:18} {name:13} batch {batch:3}: "
                      + (f"{r['images_per_s']:9.1f} img/s  p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  "
                         f"{r.get('peak_gpu_mb', '-')} MB  {100 * (r['share_of_matmul_ceiling'] or 0):5.1f} % of "
                         f"{'bf16' if 'bf16' in name else 'fp32'} ceiling" if "images_per_s" in r else r["error"])
                      + ("" if pretrained else "  [random teacher: speed only]"), flush=True)
            del engine
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def service_rows(args, out: Path, device: torch.device) -> dict:
    """End to end through a broker: bench/service_bench.py on a saved lite0 RD checkpoint."""
    from inspector.model.checkpoint import save_checkpoint

    if args.bootstrap is None and shutil.which("java") is None:  # the local broker is Apache Kafka on a JVM
        print("service: skipped (no --bootstrap and no Java for the local Apache Kafka)", flush=True)
        return {"skipped": "no broker"}
    model, manifest = build_model("rd", "efficientnet_lite0", True, args.size)
    ckpt = out / "rd-lite0"
    save_checkpoint(ckpt, model.student_state(), manifest)
    cmd = [sys.executable, str(Path(__file__).with_name("service_bench.py")), "--checkpoint", str(ckpt),
           "--frames", str(args.service_frames), "--sizes", str(args.size), "--out", str(out / "service.json"),
           "--device", str(device), "--batch", str(max(args.batch_sizes[-1] if args.dry_run else 32, 1)),
           "--bare-seconds", str(args.seconds)]
    if args.bootstrap:
        cmd += ["--bootstrap", args.bootstrap]
    if args.redis_url:
        cmd += ["--redis-url", args.redis_url]
    print("service:", " ".join(cmd[1:]), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.service_timeout)  # noqa: S603
    if proc.returncode != 0:
        print(proc.stderr[-3000:], flush=True)
        return {"error": f"service_bench exited {proc.returncode}"}
    print(proc.stderr[-2000:], flush=True)
    return json.loads((out / "service.json").read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    p.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: checks the script, not the GPU")
    p.add_argument("--size", type=int, default=None, help="frame side (default 256; 64 in a dry run)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default 1 8 32 64 128 256 (dry: 1 2)")
    p.add_argument("--seconds", type=float, default=None, help="per row (default 2; dry 0.2)")
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap for the end-to-end part (default: local)")
    p.add_argument("--redis-url", default=None, help="Redis for the end-to-end part (default: local)")
    p.add_argument("--service-frames", type=int, default=None, help="frames per service run (default 2000; dry 20)")
    p.add_argument("--service-timeout", type=float, default=300)
    args = p.parse_args()
    dry = args.dry_run
    args.size = args.size or (64 if dry else 256)
    args.batch_sizes = args.batch_sizes or ([1, 2] if dry else [1, 8, 32, 64, 128, 256])
    args.seconds = args.seconds or (0.2 if dry else 2.0)
    args.service_frames = args.service_frames or (20 if dry else 2000)
    device = torch.device("cpu" if dry or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not dry:
        print("no CUDA device: run with --dry-run on a CPU machine", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu_check on {name}, torch {torch.__version__}{' (DRY RUN: figures mean nothing)' if dry else ''}", flush=True)
    n = 512 if dry else 8192
    ceilings = {"fp32": matmul_ceiling(device, torch.float32, n, 0.3 if dry else 2.0)}
    ceilings["bf16"] = matmul_ceiling(device, torch.bfloat16, n, 0.3 if dry else 2.0)
    print(f"matmul ceiling: fp32 {ceilings['fp32']:.0f} GFLOP/s, bf16 {ceilings['bf16']:.0f} GFLOP/s", flush=True)
    result = {"device": name, "dry_run": dry, "torch": torch.__version__, "ceilings_gflop_s": ceilings,
              "engine": engine_rows(args, device, ceilings), "service": service_rows(args, args.out, device)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / 'gpu_check.json'} in {result['seconds']} s", flush=True)
    errors = [r for r in result["engine"] if "error" in r and r["error"] != "out of memory"]
    return 1 if errors or "error" in result["service"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
