"""Performance matrix of the Engine on this machine, with the reference baseline and the ceiling.

In one run:
1. the ceiling: sustained fp32 and bf16 GFLOP/s of a big matmul, and FLOPs per image of every
   model (``FlopCounterMode``);
2. the matrix (configurations interleaved round by round at each batch size): Engine.infer images/s, ms/batch and peak extra memory against batch size, for RD
   and DSKD with every teacher whose weights are on this machine (others are listed as
   unavailable), for each execution plan (torch fp32/bf16 × channels-last × folded batch
   norms, torch.compile with ``--compile``, ONNX Runtime, OpenVINO fp32/bf16);
3. the headline, interleaved: the reference implementation's way (bench/perf_baseline.py: one
   image at a time, PIL/torchvision preprocessing, numpy + scipy maps) against the best
   configuration of the matrix, alternating rounds on the same images, so noise from other
   processes hits both; ratio = fast / baseline, median over rounds;
4. the same-maps check of that configuration against fp32 (max abs map difference).

Writes ``perf.json``, ``throughput.png`` and a table (``table.txt``, also printed) into --out.

    python bench/perf_matrix.py --out runs/perf --checkpoint rd=runs/magnetic_tile/rd/checkpoint \
        --checkpoint dskd=runs/ablation12/dskd-dual/checkpoint --batch-sizes 1 4 16 64 256

Models without a checkpoint use a randomly initialised student on the real teacher: the same
arithmetic, so the same speed (the maps are meaningless).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from perf_baseline import ReferenceInspector
from perf_measure import PeakRSS, flops_per_image, matmul_gflops, time_batches

from inspector.engine.backends.plan import ExecutionPlan
from inspector.engine.capabilities import bf16_supported, onnx_available, openvino_available, openvino_cpu_bf16
from inspector.engine.engine import DiscrepancyEngine, EngineOptions, load_engine
from inspector.model.nets.teachers import TEACHERS, TeacherWeightsError, build_teacher

CONFIGS: dict[str, ExecutionPlan] = {
    "torch-fp32 (before)": ExecutionPlan("torch", "fp32", channels_last=False, fuse=False),
    "torch-fp32-cl": ExecutionPlan("torch", "fp32", channels_last=True, fuse=False),
    "torch-fp32-fused": ExecutionPlan("torch", "fp32", channels_last=False, fuse=True),
    "torch-fp32-cl-fused": ExecutionPlan("torch", "fp32", channels_last=True, fuse=True),
    "torch-bf16": ExecutionPlan("torch", "bf16", channels_last=False, fuse=False),
    "torch-bf16-cl-fused": ExecutionPlan("torch", "bf16", channels_last=True, fuse=True),
    "onnx-fp32": ExecutionPlan("onnx", "fp32", channels_last=False, fuse=False),
    "openvino-fp32": ExecutionPlan("openvino", "fp32", channels_last=False, fuse=False),
    "openvino-bf16": ExecutionPlan("openvino", "bf16", channels_last=False, fuse=False),
}
COMPILED: dict[str, ExecutionPlan] = {
    "torch-fp32-cl-fused-compiled": ExecutionPlan("torch", "fp32", channels_last=True, fuse=True, compile=True),
    "torch-bf16-cl-fused-compiled": ExecutionPlan("torch", "bf16", channels_last=True, fuse=True, compile=True),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def test_images(data: Path | None, n: int) -> tuple[list[np.ndarray], str]:
    """Decoded test images of the real data set (mixed sizes), or synthetic 256 px parts."""
    if data is not None and (data / "test").is_dir():
        from trainer.data import load_sample, scan_dataset

        samples = scan_dataset(data).test
        return [load_sample(samples[i * len(samples) // n])[0] for i in range(n)], str(data)
    from trainer.synthetic import make_image

    return [make_image("spot" if i % 4 == 0 else None, size=256, seed=0, index=i)[0] for i in range(n)], "synthetic"


def teacher_availability() -> dict[str, str]:
    """'available' or why not, for every registered teacher (nothing is downloaded)."""
    out = {}
    for name in TEACHERS:
        try:
            build_teacher(name, allow_download=False)
            out[name] = "available"
        except (TeacherWeightsError, ImportError, ValueError) as exc:
            out[name] = f"unavailable: {str(exc).split('. ')[0][:160]}"
    return out


def random_checkpoint(method: str, teacher: str, size: int, root: Path) -> Path:
    """A checkpoint with a randomly initialised student (for speed only; never served)."""
    from inspector.model.checkpoint import Manifest, new_version, save_checkpoint
    from inspector.model.nets.model import ModelConfig, build_student

    t = build_teacher(teacher, allow_download=False)
    torch.manual_seed(0)
    student = build_student(ModelConfig(method=method, variant="dual"), t)
    manifest = Manifest(name=f"bench-{method}-{teacher}", version=new_version(), method=method,
                        variant="dual" if method == "dskd" else None, teacher=teacher,
                        teacher_sha256=t.weights_sha256, image_size=size, mean=t.spec.mean, std=t.spec.std,
                        threshold=1.0, target_frr=0.005)
    out = root / f"{method}-{teacher}"
    save_checkpoint(out, {k: v.detach().contiguous() for k, v in student.state_dict().items()}, manifest)
    return out


def measure_model(engines: dict[str, DiscrepancyEngine], images: list[np.ndarray], batch: int, seconds: float,
                  rounds: int) -> list[dict]:
    """All configurations at one batch size, interleaved: each round runs every configuration
    (in a rotated order) for about seconds/rounds; images/s is the median over rounds, so load
    from other processes falls on all configurations alike."""
    names = list(engines)
    per: dict[str, list[float]] = {n: [] for n in names}
    ms: dict[str, list[float]] = {n: [] for n in names}
    cells: dict[str, dict] = {}
    for n in names:  # warm-up (compiles when compiled) and peak memory of one batch
        b = [images[j % len(images)] for j in range(batch)]
        t0 = time.perf_counter()
        engines[n].infer(b)
        warm = time.perf_counter() - t0
        with PeakRSS() as mem:
            engines[n].infer(b)
        cells[n] = {"warmup_s": warm, "peak_extra_rss_mb": mem.peak_extra_mb}
    for r in range(rounds):
        for n in names[r % len(names):] + names[: r % len(names)]:
            cell = time_batches(engines[n].infer, images, batch, seconds / rounds, min_batches=1)
            per[n].append(cell["images_per_s"])
            ms[n].append(cell["ms_per_batch_p50"])
    out = []
    for n in names:
        out.append({**cells[n], "batch": batch, "images_per_s": statistics.median(per[n]),
                    "images_per_s_rounds": per[n], "ms_per_batch_p50": statistics.median(ms[n])})
    return out


def headline(ckpt: Path, best: ExecutionPlan, best_batch: int, images: list[np.ndarray], rounds: int) -> dict:
    """Baseline and best configuration alternating on the same images; ratio per round."""
    ref_engine = load_engine(ckpt, "cpu", EngineOptions(plan=CONFIGS["torch-fp32 (before)"]))
    m = ref_engine.manifest
    baseline = ReferenceInspector(ref_engine.model, m.image_size, m.mean, m.std, m.sigma)
    fast = load_engine(ckpt, "cpu", EngineOptions(plan=best))
    batches = [images[i:i + best_batch] for i in range(0, len(images), best_batch)]
    baseline.inspect(images[0])
    fast.infer(batches[0])
    per_round = []
    for r in range(rounds):
        t0 = time.perf_counter()
        for img in images:
            baseline.inspect(img)
        base_ips = len(images) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for b in batches:
            fast.infer(b)
        fast_ips = len(images) / (time.perf_counter() - t0)
        per_round.append({"baseline_images_per_s": base_ips, "fast_images_per_s": fast_ips, "ratio": fast_ips / base_ips})
        log(f"  round {r + 1}: baseline {base_ips:6.1f} img/s   {best.describe()} b{best_batch}: {fast_ips:6.1f} img/s"
            f"   ratio {fast_ips / base_ips:5.2f}")
    # same maps? fast path vs fp32 Engine, and the baseline (align_corners=True, float64) vs fp32
    sample = images[: min(16, len(images))]
    ref_maps = ref_engine.maps(sample)[0].numpy()
    fast_maps = fast.maps(sample)[0].numpy()
    base_maps = np.stack([baseline.anomaly_map(img) for img in sample])
    return {
        "checkpoint": str(ckpt), "fast_path": best.describe(), "batch": best_batch, "images": len(images),
        "rounds": per_round,
        "baseline_images_per_s": statistics.median(r["baseline_images_per_s"] for r in per_round),
        "fast_images_per_s": statistics.median(r["fast_images_per_s"] for r in per_round),
        "ratio_median": statistics.median(r["ratio"] for r in per_round),
        "max_abs_map_diff_fast_vs_fp32": float(np.abs(fast_maps - ref_maps).max()),
        "max_abs_map_diff_baseline_vs_fp32": float(np.abs(base_maps - ref_maps).max()),
        "map_max_fp32": float(ref_maps.max()),
    }


def table(result: dict) -> str:
    lines = [f"ceiling: matmul fp32 {result['ceiling']['matmul_fp32_gflops']:.0f} GFLOP/s, "
             f"bf16 {result['ceiling']['matmul_bf16_gflops']:.0f} GFLOP/s ({result['environment']['threads']} threads)"]
    for model, info in result["models"].items():
        lines.append(f"\n{model}: {info['flops']['total_gflop']:.2f} GFLOP/image "
                     f"(teacher {info['flops']['teacher_gflop']:.2f})")
        lines.append(f"{'config':32} {'batch':>5} {'img/s':>8} {'ms/batch':>9} {'peak MB':>8} {'of ceiling':>10}")
        for c in info["cells"]:
            lines.append(f"{c['config']:32} {c['batch']:>5} {c['images_per_s']:>8.1f} {c['ms_per_batch_p50']:>9.1f} "
                         f"{c['peak_extra_rss_mb']:>8.0f} {100 * c['fraction_of_ceiling']:>9.1f}%")
    h = result.get("headline")
    if h:
        lines.append(f"\nheadline ({h['checkpoint']}): baseline {h['baseline_images_per_s']:.1f} img/s, "
                     f"{h['fast_path']} batch {h['batch']}: {h['fast_images_per_s']:.1f} img/s, "
                     f"ratio {h['ratio_median']:.2f} (median of {len(h['rounds'])} interleaved rounds); "
                     f"max |map − fp32| {h['max_abs_map_diff_fast_vs_fp32']:.2g}")
    for name, state in result["teachers"].items():
        if state != "available":
            lines.append(f"teacher {name}: {state}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--checkpoint", action="append", default=[], metavar="METHOD=DIR",
                   help="trained checkpoint to use for METHOD (rd|dskd) with its teacher")
    p.add_argument("--methods", nargs="+", default=["rd", "dskd"])
    p.add_argument("--teachers", nargs="+", default=list(TEACHERS))
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 4, 16, 64])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), help=f"subset of {list(CONFIGS)}")
    p.add_argument("--compile", action="store_true", help="also torch.compile configs (slow to compile on small CPUs)")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per cell (after one warm-up batch)")
    p.add_argument("--matrix-rounds", type=int, default=3, help="interleaved rounds per batch size")
    p.add_argument("--rounds", type=int, default=5, help="interleaved baseline/fast rounds of the headline")
    p.add_argument("--headline-images", type=int, default=32)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared/datasets/magnetic_tile")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    given = dict(c.split("=", 1) for c in args.checkpoint)
    images, source = test_images(args.data, max(64, args.headline_images))
    configs = {k: CONFIGS[k] for k in args.configs}
    if not onnx_available():
        configs.pop("onnx-fp32", None)
    if not openvino_available():
        configs = {k: v for k, v in configs.items() if v.backend != "openvino"}
    if not openvino_cpu_bf16():
        configs.pop("openvino-bf16", None)
    if not bf16_supported(torch.device("cpu")):
        configs = {k: v for k, v in configs.items() if v.precision != "bf16" or v.backend == "openvino"}
    if args.compile:
        configs.update(COMPILED)

    log("ceiling: matmul fp32 / bf16 …")
    ceiling = {"matmul_fp32_gflops": matmul_gflops(torch.float32), "matmul_bf16_gflops": matmul_gflops(torch.bfloat16)}
    teachers = teacher_availability()
    result: dict = {
        "environment": {"cpu": platform.processor() or platform.machine(), "cores": __import__("os").cpu_count(),
                        "threads": torch.get_num_threads(), "torch": torch.__version__,
                        "bf16": bf16_supported(torch.device("cpu")), "onnxruntime": _dist_version("onnxruntime"),
                        "openvino_bf16": openvino_cpu_bf16(), "openvino": _dist_version("openvino"),
                        "images": source, "command": " ".join(sys.argv)},
        "ceiling": ceiling, "teachers": teachers, "models": {},
    }
    tmp = tempfile.TemporaryDirectory()
    ckpts: dict[str, Path] = {}
    for method in args.methods:
        for teacher in args.teachers:
            if teachers.get(teacher) != "available":
                continue
            key = f"{method}/{teacher}/{args.image_size}px"
            ckpt = given.get(method)
            if ckpt and json.loads((Path(ckpt) / "manifest.json").read_text())["teacher"] == teacher:
                ckpts[key] = Path(ckpt)
            else:
                ckpts[key] = random_checkpoint(method, teacher, args.image_size, Path(tmp.name))
            probe = load_engine(ckpts[key], "cpu", EngineOptions(plan=CONFIGS["torch-fp32 (before)"]))
            flops = flops_per_image(probe.model, probe.image_size)
            cells, engines = [], {}
            for name, plan in configs.items():
                try:
                    engines[name] = load_engine(ckpts[key], "cpu", EngineOptions(plan=plan))
                except Exception as exc:  # noqa: BLE001 - a config that cannot run is reported, not fatal
                    log(f"{key} {name}: cannot run: {exc}")
                    cells.append({"config": name, "error": str(exc)[:300]})
            for bs in args.batch_sizes:
                for name, cell in zip(engines, measure_model(engines, images, bs, args.seconds * len(engines),
                                                             args.matrix_rounds)):
                    plan = configs[name]
                    gflops = flops["total_gflop"] * cell["images_per_s"]
                    peak = ceiling["matmul_bf16_gflops" if plan.precision == "bf16" else "matmul_fp32_gflops"]
                    cell.update(config=name, fast_path=plan.describe(), achieved_gflops=gflops,
                                fraction_of_ceiling=gflops / peak)
                    cells.append(cell)
                    log(f"{key} {name:30} batch {bs:4}: {cell['images_per_s']:7.1f} img/s "
                        f"{cell['ms_per_batch_p50']:8.1f} ms/batch  +{cell['peak_extra_rss_mb']:.0f} MB")
            del engines
            result["models"][key] = {"checkpoint": str(ckpts[key]) if ckpts[key].parent != Path(tmp.name) else "random student",
                                     "flops": flops, "cells": [c for c in cells if "error" not in c],
                                     "errors": [c for c in cells if "error" in c]}
    head_key = next((k for k in result["models"] if k.startswith("rd/efficientnet_lite0")), None)
    if head_key:
        cells = result["models"][head_key]["cells"]
        best = max(cells, key=lambda c: c["images_per_s"])
        log(f"headline: baseline vs {best['config']} batch {best['batch']}, {args.rounds} interleaved rounds …")
        result["headline"] = headline(ckpts[head_key], configs[best["config"]], best["batch"],
                                      images[: args.headline_images], args.rounds)
        h = result["headline"]
        flops = result["models"][head_key]["flops"]["total_gflop"]
        peak = ceiling["matmul_bf16_gflops" if configs[best["config"]].precision == "bf16" else "matmul_fp32_gflops"]
        h["achieved_gflops"] = flops * h["fast_images_per_s"]
        h["fraction_of_ceiling"] = h["achieved_gflops"] / peak
        h["baseline_fraction_of_ceiling"] = flops * h["baseline_images_per_s"] / ceiling["matmul_fp32_gflops"]
    (args.out / "perf.json").write_text(json.dumps(result, indent=2) + "\n")
    text = table(result)
    (args.out / "table.txt").write_text(text + "\n")
    from perf_plots import plot_throughput

    plot_throughput(result, args.out / "throughput.png")
    print(text)
    tmp.cleanup()
    return 0


def _dist_version(dist: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
