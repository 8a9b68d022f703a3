"""The gate: whether a refresh candidate may replace the live model, and if not, why.

Each finding is a machine-readable :class:`~inspector.contracts.reasons.GateReason` (schedulers and
dashboards match it) with the sentence for people. No finding: promote."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel

from inspector.contracts.reasons import GateReason

from ..settings import TrainerSettings

__all__ = ["GateFinding", "enough_images", "gate"]


class GateFinding(BaseModel):
    """One reason not to promote: its code, and what it means for this candidate in words."""

    code: GateReason
    message: str


def enough_images(model: str, n: int, min_images: int) -> list[GateFinding]:
    """The store must hold at least ``min_images`` images before a refresh trains anything."""
    if n >= min_images:
        return []
    return [GateFinding(code=GateReason.TOO_FEW_IMAGES, message=(
        f"too few images in the store for model {model!r}: {n} < min_images {min_images}; "
        f"collect more confirmed-normal frames (trainer collect) before refreshing"))]


def _recall_at_frr(lab: dict[str, Any], frr: float) -> float:
    """Defect recall at the threshold that gives false-reject rate ``frr`` on the labelled good images."""
    from ..metrics import threshold_for_false_reject_rate

    scores, labels = lab["_scores"], lab["_labels"]
    thr = threshold_for_false_reject_rate(scores[~labels], min(frr, 0.999))
    return float(np.mean(scores[labels] >= thr))


def _frr_margin(margin: float, n: int) -> float:
    """The configured FRR margin, but never below one image: a single extra reject among n images
    is not evidence that a model got worse."""
    return max(margin, 1.0 / n) if n else margin


def gate(settings: TrainerSettings, cand: dict[str, Any], live: dict[str, Any] | None,
         cand_lab: dict[str, Any] | None, live_lab: dict[str, Any] | None,
         target_frr: float) -> tuple[list[GateFinding], dict[str, float]]:
    """Findings against the candidate (empty: promote) and the compared deltas.

    ``cand``/``live``: metrics on the held-out normals; ``cand_lab``/``live_lab``: on the labelled
    set (None without one), as ``trainer.refresh.measure`` makes them."""
    found: list[GateFinding] = []
    deltas: dict[str, float] = {}

    def refuse(code: GateReason, message: str) -> None:
        found.append(GateFinding(code=code, message=message))

    s = settings
    if live is None:
        margin = _frr_margin(s.max_frr_increase, cand["score_stats"]["n"])
        if cand["false_reject_rate"] > target_frr + margin:
            refuse(GateReason.HOLDOUT_FRR_OVER_TARGET,
                   f"false-reject rate on held-out normals {cand['false_reject_rate']:.3f} > "
                   f"target {target_frr:.3f} + margin {margin:.3f} (no live model to compare with)")
        return found, deltas
    d_frr = cand["false_reject_rate"] - live["false_reject_rate"]
    shift = cand["median_position"] - live["median_position"]
    deltas.update(holdout_frr_increase=d_frr, holdout_normal_score_shift=shift)
    margin = _frr_margin(s.max_frr_increase, cand["score_stats"]["n"])
    if d_frr > margin:
        refuse(GateReason.HOLDOUT_FRR_WORSE,
               f"false-reject rate on held-out normals {cand['false_reject_rate']:.3f} is worse than the live "
               f"model's {live['false_reject_rate']:.3f} by more than {margin:.3f}")
    if shift > s.max_normal_score_shift:
        refuse(GateReason.HOLDOUT_SCORES_SHIFTED,
               f"held-out normal scores moved towards the threshold: median position {cand['median_position']:.3f} "
               f"vs live {live['median_position']:.3f} (0 = calibration median, 1 = threshold; "
               f"shift {shift:+.3f} > {s.max_normal_score_shift:.3f})")
    if cand_lab is not None and live_lab is not None:
        _labelled(s, cand_lab, live_lab, deltas, refuse)
    return found, deltas


def _labelled(s: TrainerSettings, cand_lab: dict[str, Any], live_lab: dict[str, Any], deltas: dict[str, float],
              refuse: Any) -> None:
    for key, margin, label, code in (
            ("image_auroc", s.max_auroc_drop, "image AUROC", GateReason.LABELLED_IMAGE_AUROC_DROP),
            ("aupro", s.max_aupro_drop, "AUPRO", GateReason.LABELLED_AUPRO_DROP)):
        c, l_ = cand_lab.get(key), live_lab.get(key)
        if c is None or l_ is None:
            continue
        deltas[f"labelled_{key}_drop"] = l_ - c
        if l_ - c > margin:
            refuse(code, f"{label} on the labelled set {c:.4f} is below the live model's {l_:.4f} by more than {margin:.3f}")
    c, l_ = cand_lab.get("defect_recall"), live_lab.get("defect_recall")
    if c is not None and l_ is not None:
        deltas["labelled_recall_drop"] = l_ - c
        if l_ - c > s.max_recall_drop:
            # Each model is judged at its own threshold. Lost recall is excused only where it
            # buys fewer false rejects (the live threshold was over-tight) and the candidate,
            # held to the live model's false-reject rate, recalls as much. A candidate whose
            # threshold rose without that gain (e.g. defects among its "normals") is refused.
            c_frr, l_frr = cand_lab.get("false_reject_rate") or 0.0, live_lab.get("false_reject_rate") or 0.0
            if c_frr < l_frr:
                matched = _recall_at_frr(cand_lab, l_frr)
                deltas["labelled_recall_drop_at_live_frr"] = l_ - matched
                if l_ - matched > s.max_recall_drop:
                    refuse(GateReason.LABELLED_RECALL_DROP,
                           f"defect recall on the labelled set {c:.3f} is below the live model's {l_:.3f} by "
                           f"more than {s.max_recall_drop:.3f}, and still {matched:.3f} at the live model's "
                           f"false-reject rate (the candidate ranks defects worse)")
            else:
                refuse(GateReason.LABELLED_THRESHOLD_LOOSENED,
                       f"defect recall on the labelled set {c:.3f} is below the live model's {l_:.3f} by more "
                       f"than {s.max_recall_drop:.3f} without fewer false rejects "
                       f"({c_frr:.3f} vs {l_frr:.3f}): the new threshold lets defects through")
    c, l_ = cand_lab.get("false_reject_rate"), live_lab.get("false_reject_rate")
    if c is not None and l_ is not None:
        deltas["labelled_frr_increase"] = c - l_
        margin = _frr_margin(s.max_frr_increase, cand_lab.get("n_good") or 0)
        if c - l_ > margin:
            refuse(GateReason.LABELLED_FRR_WORSE,
                   f"false-reject rate on the labelled set's good images {c:.3f} is worse than the live "
                   f"model's {l_:.3f} by more than {margin:.3f}")
    c, l_ = cand_lab.get("good_median_position"), live_lab.get("good_median_position")
    if c is not None and l_ is not None:
        deltas["labelled_normal_score_shift"] = c - l_
        if c - l_ > s.max_normal_score_shift:
            refuse(GateReason.LABELLED_SCORES_SHIFTED,
                   f"the labelled set's good images moved towards the threshold: median position "
                   f"{c:.3f} vs live {l_:.3f} (shift {c - l_:+.3f} > {s.max_normal_score_shift:.3f})")
