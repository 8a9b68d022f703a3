"""Accuracy of the fast paths on a labelled set: image/pixel AUROC and maps against plain fp32.

Runs the whole test set through the Engine once per configuration (the fp32 reference = the
engine as it was before the fast paths: torch, fp32, NCHW, nothing folded), with
``trainer.evaluate.run_test_set`` and ``trainer.metrics``; reports each configuration's AUROCs,
their differences from the reference, the largest absolute map difference over all pixels, and
the false-reject rate and recall each gives at the checkpoint's stored threshold (calibrated in
fp32 at fit time: a faster graph that moved the scores would show it here).

    python bench/perf_parity.py --checkpoint runs/magnetic_tile/rd/checkpoint --out runs/perf/parity.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from inspector.engine.backends.plan import ExecutionPlan
from inspector.engine.capabilities import bf16_supported, onnx_available, openvino_available, openvino_cpu_bf16
from inspector.engine.engine import EngineOptions, load_engine
from trainer.evaluate import run_test_set
from trainer.metrics import image_auroc, pixel_auroc

TOLERANCE = 0.005  # allowed AUROC difference from fp32 (issue 20)


def configs() -> dict[str, ExecutionPlan]:
    out = {"fp32 reference": ExecutionPlan("torch", "fp32", channels_last=False, fuse=False),
           "torch-fp32-cl-fused": ExecutionPlan("torch", "fp32", channels_last=True, fuse=True)}
    if onnx_available():
        out["onnx-fp32"] = ExecutionPlan("onnx", "fp32", channels_last=False, fuse=False)
    if openvino_available():
        out["openvino-fp32"] = ExecutionPlan("openvino", "fp32", channels_last=False, fuse=False)
        if openvino_cpu_bf16():
            out["openvino-bf16"] = ExecutionPlan("openvino", "bf16", channels_last=False, fuse=False)
    import torch

    if bf16_supported(torch.device("cpu")):
        out["torch-bf16-cl-fused"] = ExecutionPlan("torch", "bf16", channels_last=True, fuse=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared/datasets/magnetic_tile")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--configs", nargs="+", default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    chosen = configs()
    if args.configs:
        chosen = {"fp32 reference": chosen["fp32 reference"], **{k: chosen[k] for k in args.configs}}
    results, ref_maps = {}, None
    for name, plan in chosen.items():
        engine = load_engine(args.checkpoint, "cpu", EngineOptions(plan=plan))
        t0 = time.perf_counter()
        scores, maps, masks, labels, *_ = run_test_set(engine, args.data, args.batch)
        seconds = time.perf_counter() - t0
        scores, labels = np.asarray(scores), np.asarray(labels, bool)
        flagged = scores >= engine.threshold
        row = {"fast_path": plan.describe(), "image_auroc": image_auroc(scores, labels),
               "pixel_auroc": pixel_auroc(maps, masks), "images": len(scores), "seconds": round(seconds, 1),
               "false_reject_rate": float(flagged[~labels].mean()), "recall": float(flagged[labels].mean())}
        if ref_maps is None:
            ref_maps, ref = maps, row
        else:
            row["image_auroc_delta"] = row["image_auroc"] - ref["image_auroc"]
            row["pixel_auroc_delta"] = row["pixel_auroc"] - ref["pixel_auroc"]
            row["max_abs_map_diff"] = float(np.abs(maps - ref_maps).max())
            row["within_tolerance"] = bool(abs(row["image_auroc_delta"]) <= TOLERANCE
                                           and abs(row["pixel_auroc_delta"]) <= TOLERANCE)
        results[name] = row
        print(f"{name:22} image AUROC {row['image_auroc']:.4f}  pixel AUROC {row['pixel_auroc']:.4f}  "
              + (f"Δ {row['image_auroc_delta']:+.4f} / {row['pixel_auroc_delta']:+.4f}  max|Δmap| {row['max_abs_map_diff']:.2g}"
                 if "max_abs_map_diff" in row else "(reference)")
              + f"  false rejects {100 * row['false_reject_rate']:.1f} %  recall {100 * row['recall']:.1f} %  [{seconds:.0f} s]", file=sys.stderr, flush=True)
    out = {"checkpoint": str(args.checkpoint), "data": str(args.data), "map_max_fp32": float(ref_maps.max()),
           "stored_threshold": engine.threshold,
           "tolerance": TOLERANCE, "results": results}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
