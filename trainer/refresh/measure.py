"""What the gate compares: one loaded engine's metrics on the held-out normals and on the labelled set.

Scores of two models are not on one scale, so normal scores are placed between each model's own
calibration normals and its threshold (``position``). The caller loads each engine once and
passes it to both measurements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import structlog

from inspector.contracts.decode import DecodeError, read_image
from inspector.model.checkpoint import OperatingPoint

__all__ = ["labelled_metrics", "normal_metrics", "position", "public", "read_images"]


def read_images(paths: list[Path]) -> list[np.ndarray]:
    """The held-out normals, decoded; an unreadable one is logged and skipped."""
    out = []
    for p in paths:
        try:
            out.append(read_image(p))
        except (DecodeError, OSError) as exc:
            structlog.get_logger("trainer.refresh").warning("holdout_image_skipped", path=str(p), error=str(exc)[:200])
    return out


def _scores(engine: Any, images: list[np.ndarray], batch: int = 16) -> np.ndarray:
    out = [engine.scores(images[i:i + batch]) for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros(0)


def position(scores: np.ndarray, point: OperatingPoint) -> np.ndarray:
    """Where scores sit between the model's own calibration normals (0 = their median) and its
    threshold (1): a unit-free scale on which two models' normal scores can be compared. ``point``:
    the engine's (``DiscrepancyEngine.operating_point``), calibrated in the precision it runs."""
    ref = float(point.score_stats.get("p50", 0.0))
    span = float(point.threshold) - ref
    if not np.isfinite(span) or span <= 1e-12:
        span = float(point.score_stats.get("std", 0.0)) or 1.0
    return (scores - ref) / span


def normal_metrics(engine: Any, images: list[np.ndarray]) -> dict[str, Any]:
    """False-reject rate and score position of ``engine`` on the held-out normals."""
    from ..metrics import score_stats

    s = _scores(engine, images)
    thr = float(engine.threshold)
    pos = position(s, engine.operating_point)
    return {"version": engine.version, "threshold": thr, "false_reject_rate": float(np.mean(s >= thr)),
            "median_position": float(np.median(pos)), "p95_position": float(np.percentile(pos, 95)),
            "score_stats": score_stats(s)}


def labelled_metrics(engine: Any, eval_dir: Path) -> dict[str, Any]:
    """``engine``'s metrics on a labelled MVTec-layout folder (as ``trainer evaluate`` reports them),
    with the per-image scores and labels kept under ``_`` keys for the gate's matched-FRR recall."""
    from ..evaluate import run_test_set
    from ..metrics import per_type_metrics, score_stats

    scores, maps, masks, labels, types, *_ = run_test_set(engine, eval_dir)
    overall = per_type_metrics(types, scores, maps, masks)["overall"]
    thr = float(engine.threshold)
    good = ~labels
    good_stats = score_stats(scores[good]) if good.any() else None
    p50 = good_stats["p50"] if good_stats else None
    return {"image_auroc": overall["image_auroc"], "pixel_auroc": overall.get("pixel_auroc"),
            "aupro": overall.get("aupro"),
            "false_reject_rate": float(np.mean(scores[good] >= thr)) if good.any() else None,
            "defect_recall": float(np.mean(scores[labels] >= thr)) if labels.any() else None,
            "threshold": thr, "n_images": len(scores), "n_good": good_stats["n"] if good_stats else 0,
            "_scores": np.asarray(scores, dtype=float), "_labels": np.asarray(labels, dtype=bool),
            "good_median_position": (None if p50 is None
                                     else float(position(np.array([p50]), engine.operating_point)[0]))}


def public(lab: dict[str, Any] | None) -> dict[str, Any] | None:
    """The metrics without the per-image arrays (for the summary and the manifest)."""
    return None if lab is None else {k: v for k, v in lab.items() if not k.startswith("_")}
