"""Evaluation of a checkpoint on a labelled MVTec-layout folder, through the serving Engine.

Maps are compared with masks at the model's resolution, the usual practice for MVTec-style
benchmarks: each frame's part of its map and its mask are brought to the model input's grid, so
every test image weighs the same whatever its shape. The report folder gets ``metrics.json``, ROC curves and a
grid of heatmap overlays.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import structlog

from inspector.contracts.decode import DecodeError
from inspector.engine.engine import DiscrepancyEngine, load_engine
from inspector.engine.options import EngineOptions

from .data import DatasetError, load_sample, resize_mask, scan_dataset
from .metrics import per_type_metrics, score_stats
from .report import heatmap_overlay, overlay_grid, plot_roc, roc_curve_points


#: Side of the square grid on which a tiled model's maps and masks are compared.
TILED_GRID = 1024


def to_grid(frame_map: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A frame's map (its own aspect) on the evaluation grid, so that every test image weighs the
    same in the pixel metrics whatever its shape (a no-op for frames that fill the input)."""
    if frame_map.shape == tuple(grid):
        return frame_map.astype(np.float32)
    return cv2.resize(frame_map.astype(np.float32), (grid[1], grid[0]), interpolation=cv2.INTER_LINEAR)


def run_test_set(engine: DiscrepancyEngine, data: str | Path, batch_size: int = 16):
    """Score every test image. Returns scores, maps, masks, labels, types, paths, a few originals, skipped."""
    log = structlog.get_logger("trainer.evaluate")
    index = scan_dataset(data)
    if not index.test:
        raise DatasetError(f"{data}: no test images to evaluate on")
    geometry = engine.geometry
    # maps and masks are compared on the model input's grid, each frame filling it; a tiled model
    # sees frames at full resolution, so its grid is finer (small defects stay visible in the masks)
    grid = geometry.hw if engine.tiling is None else (TILED_GRID, TILED_GRID)
    scores, maps, masks, types, paths, skipped, originals = [], [], [], [], [], [], {}
    pending: list[tuple] = []
    shown: Counter[str] = Counter()  # overlay examples kept per type

    def flush() -> None:
        frame_maps, s = engine.frame_maps([img for _, img, _ in pending])
        for (sample, img, mask), mi, si in zip(pending, frame_maps, s):
            scores.append(float(si))
            maps.append(to_grid(mi, grid))
            masks.append(resize_mask(mask, grid) if mask is not None else np.zeros(grid, bool))
            types.append(sample.defect_type)
            paths.append(str(sample.path))
            if shown[sample.defect_type] < 4:
                shown[sample.defect_type] += 1
                originals[len(paths) - 1] = (sample.defect_type, img)
        pending.clear()

    for sample in index.test:
        try:
            img, mask = load_sample(sample)
        except (DecodeError, OSError) as exc:
            skipped.append((str(sample.path), getattr(exc, "reason", "unreadable")))
            log.warning("image_skipped", path=str(sample.path), reason=skipped[-1][1])
            continue
        pending.append((sample, img, mask))
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    return (np.asarray(scores), np.stack(maps), np.stack(masks), np.asarray([t != "good" for t in types]),
            types, paths, originals, skipped)


def evaluate(checkpoint: str | Path, data: str | Path, report: str | Path | None = None,
             device: str | None = None, batch_size: int = 16, keep_scores: bool = False,
             options: EngineOptions = EngineOptions()) -> dict[str, Any]:
    """Metrics of a checkpoint on a labelled folder, run as ``options`` ask (default: as a worker
    here would); ``keep_scores`` adds the per-image scores and labels."""
    engine = load_engine(checkpoint, device, options)
    t0 = time.perf_counter()
    scores, maps, masks, labels, types, paths, originals, skipped = run_test_set(engine, data, batch_size)
    infer_s = time.perf_counter() - t0
    result = per_type_metrics(types, scores, maps, masks)
    overall = result["overall"]
    thr = engine.threshold
    good = ~labels
    summary: dict[str, Any] = {
        "checkpoint": str(checkpoint), "model": engine.name, "version": engine.version,
        "method": engine.manifest.method, "variant": engine.manifest.variant, "teacher": engine.manifest.teacher,
        "image_size": engine.image_size, "input": engine.geometry.describe(),
        "image_auroc": overall["image_auroc"], "pixel_auroc": overall.get("pixel_auroc"), "aupro": overall.get("aupro"),
        "plan": engine.plan.describe(), "threshold": thr, "target_frr": engine.manifest.target_frr,
        "calibration": engine.operating_point.calibration.get("method", "empirical"),
        # the threshold of the precision the engine ran in, when the fit calibrated one (else fp32)
        "threshold_calibrated_in": engine.threshold_calibrated_in,
        "false_reject_rate": float(np.mean(scores[good] >= thr)) if good.any() else None,
        "defect_recall": float(np.mean(scores[labels] >= thr)) if labels.any() else None,
        "per_type": result["per_type"],
        "n_images": len(scores), "skipped": skipped,
        "good_score_stats": score_stats(scores[good]) if good.any() else None,
        "seconds": round(infer_s, 2), "images_per_s": round(len(scores) / infer_s, 2),
    }
    if report is not None:
        write_report(Path(report), summary, scores, labels, types, maps, masks, originals, thr)
    if keep_scores:
        summary["scores"], summary["labels"] = scores.tolist(), labels.astype(int).tolist()
    return summary


def write_report(out: Path, summary: dict, scores, labels, types, maps, masks, originals, thr: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    types_arr = np.asarray(types)
    curves = {"all": roc_curve_points(scores, labels)}
    for t in sorted(set(types) - {"good"}):
        sel = (types_arr == "good") | (types_arr == t)
        curves[t] = roc_curve_points(scores[sel], labels[sel])
    plot_roc(curves, out / "roc_image.png", "Image-level ROC")
    # Pixel ROC from a deterministic strided sample of pixels (plot only; the metric itself is exact).
    step = max(1, maps.size // 2_000_000)
    plot_roc({"all pixels": roc_curve_points(maps.ravel()[::step], masks.ravel()[::step])}, out / "roc_pixel.png", "Pixel-level ROC")
    vmax = float(np.percentile(maps, 99.9))
    tiles, captions = [], []
    for i in sorted(originals):
        kind, img = originals[i]
        mask = masks[i]
        full_mask = cv2.resize(mask.astype(np.uint8), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        tiles.append(heatmap_overlay(img, maps[i], vmin=0.0, vmax=vmax, mask=full_mask if mask.any() else None))
        verdict = "DEFECT" if scores[i] >= thr else "ok"
        captions.append(f"{kind} {scores[i]:.3f} {verdict}")
    if tiles:
        overlay_grid(tiles, captions, out / "heatmaps.png", cols=4, tile_size=(192, 192))
