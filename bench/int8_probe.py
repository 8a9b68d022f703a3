"""Static int8 quantization of the exported graph (ONNX Runtime QDQ), side by side with fp32.

The issue asked whether int8 (per-channel weights, activations calibrated on training normals
only) puts the CPU's VNNI units to work on this model. This script quantizes the convolutions of a
checkpoint's exported graph (optionally leaving the depthwise ones in fp32), then measures, in one
interleaved run on the same test images: throughput of both sessions at one batch size, how far the
int8 maps and scores move from fp32, and the image AUROC each gives on the data set's test split.

    python bench/int8_probe.py --checkpoint runs/w/rd/checkpoint --data ../shared/datasets/magnetic_tile
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from inspector.contracts.decode import read_image
from inspector.engine.backends.onnx import export_onnx, open_session
from inspector.engine.engine import EngineOptions, load_engine
from inspector.model.preprocess import prepare_batch
from trainer.data import load_sample, scan_dataset, split_train_val
from trainer.metrics import image_auroc


def depthwise_convs(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path)).graph
    return [n.name for n in graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]


def quantize(fp32: bytes, calibration: np.ndarray, input_name: str, keep_depthwise: bool, work: Path) -> bytes:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    (work / "fp32.onnx").write_bytes(fp32)
    quant_pre_process(str(work / "fp32.onnx"), str(work / "pre.onnx"), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{input_name: calibration[i:i + 8]} for i in range(0, len(calibration), 8)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(work / "pre.onnx"), str(work / "int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv"],
                    nodes_to_exclude=depthwise_convs(work / "pre.onnx") if keep_depthwise else [])
    return (work / "int8.onnx").read_bytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--calibration-images", type=int, default=64, help="training normals the activations are calibrated on")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    threads = args.threads or torch.get_num_threads()
    engine = load_engine(args.checkpoint, "cpu", EngineOptions(backend="torch"))
    model, m = engine.model.eval(), engine.manifest
    g = m.input_geometry()
    index = scan_dataset(args.data)
    train, _ = split_train_val(index.train_paths, m.training.get("val_fraction", 0.1), m.training.get("seed", 0))
    calibration = prepare_batch([read_image(p) for p in train[:args.calibration_images]], g, m.mean, m.std).numpy()
    fp32 = export_onnx(model, g.hw)
    sessions = {"onnx-fp32": open_session(fp32, threads)}
    name = sessions["onnx-fp32"].get_inputs()[0].name
    with tempfile.TemporaryDirectory() as tmp:
        for label, keep in (("onnx-int8 (all convs)", False), ("onnx-int8 (depthwise kept fp32)", True)):
            sessions[label] = open_session(quantize(fp32, calibration, name, keep, Path(tmp)), threads)
    samples = list(index.test)
    images = [load_sample(s)[0] for s in samples]
    labels = np.asarray([s.defect_type != "good" for s in samples])
    x = prepare_batch(images, g, m.mean, m.std).numpy()
    outputs = {}
    for label, s in sessions.items():
        runs = [s.run(None, {name: x[i:i + args.batch]}) for i in range(0, len(x), args.batch)]
        outputs[label] = (np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs]))
    ref_maps, ref_scores = outputs["onnx-fp32"]
    xb = x[:args.batch]
    speed: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(args.rounds):  # interleaved: each round measures every session back to back
        for label, s in sessions.items():
            s.run(None, {name: xb})
            t, n = time.perf_counter(), 0
            while time.perf_counter() - t < args.seconds:
                s.run(None, {name: xb})
                n += len(xb)
            speed[label].append(n / (time.perf_counter() - t))
    base = float(np.median(speed["onnx-fp32"]))
    for label, (maps, scores) in outputs.items():
        print(json.dumps({
            "graph": label, "images_per_s": round(float(np.median(speed[label])), 1),
            "vs_fp32": round(float(np.median(speed[label])) / base, 2), "batch": args.batch, "threads": threads,
            "image_auroc": round(image_auroc(scores, labels), 4),
            "max_map_change_rel": round(float(np.abs(maps - ref_maps).max() / np.abs(ref_maps).max()), 4),
            "score_correlation": round(float(np.corrcoef(scores, ref_scores)[0, 1]), 4)}), flush=True)


if __name__ == "__main__":
    main()
