import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from trainer.metrics import (
    aupro,
    image_auroc,
    per_type_metrics,
    pixel_auroc,
    score_stats,
    threshold_for_false_reject_rate,
)

# ---------------------------------------------------------------- image AUROC


def test_image_auroc_perfect_inverted_tied():
    labels = np.array([0, 0, 0, 1, 1])
    assert image_auroc(np.array([0.1, 0.2, 0.3, 0.8, 0.9]), labels) == 1.0
    assert image_auroc(np.array([0.9, 0.8, 0.7, 0.2, 0.1]), labels) == 0.0
    assert image_auroc(np.full(5, 0.5), labels) == 0.5


def test_image_auroc_partial_with_tie():
    # pairs (neg, pos): negs [1, 2], pos [2, 3] -> (1<2) (1<3) (2==2 -> 1/2) (2<3) = 3.5 / 4
    assert image_auroc(np.array([1, 2, 2, 3]), np.array([0, 0, 1, 1])) == pytest.approx(0.875)


def test_image_auroc_one_class_raises():
    with pytest.raises(ValueError, match="both"):
        image_auroc(np.array([0.1, 0.2]), np.array([0, 0]))
    with pytest.raises(ValueError, match="both"):
        image_auroc(np.array([0.1, 0.2]), np.array([1, 1]))


# ---------------------------------------------------------------- pixel AUROC


def test_pixel_auroc_hand_example():
    """Pixels: defects {0.9, 0.4}, normals {0.1, 0.4, 0.5}.

    0.9 beats all 3 normals (3); 0.4 beats 0.1 (1), ties 0.4 (0.5), loses to 0.5 (0)
    -> 4.5 / (2 * 3) = 0.75.
    """
    maps = np.array([[[0.9, 0.1, 0.4, 0.4, 0.5]]])
    masks = np.array([[[1, 0, 1, 0, 0]]], dtype=bool)
    assert pixel_auroc(maps, masks) == pytest.approx(0.75)


def test_pixel_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    maps = rng.integers(0, 7, size=(3, 9, 11)).astype(np.float32)
    masks = rng.random((3, 9, 11)) < 0.3
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_pixel_auroc_needs_both_classes():
    with pytest.raises(ValueError):
        pixel_auroc(np.zeros((1, 2, 2)), np.zeros((1, 2, 2), bool))


# ---------------------------------------------------------------- AUPRO


def _mask_two_regions():
    """(1, 2, 7) mask: region A = 1 px at (0,0); region B = 3 px at (0,4..6); 10 normal px."""
    masks = np.zeros((1, 2, 7), dtype=bool)
    masks[0, 0, 0] = True
    masks[0, 0, 4:7] = True
    return masks


def test_aupro_perfect_map_is_one():
    masks = _mask_two_regions()
    assert aupro(masks.astype(float), masks) == pytest.approx(1.0)


def test_aupro_constant_map():
    """All pixels tie: one diagonal segment (0,0)->(1,1), so PRO = FPR.

    Area to L is L^2/2, normalised by L -> L/2.
    """
    masks = _mask_two_regions()
    const = np.full(masks.shape, 0.7)
    assert aupro(const, masks, fpr_limit=0.3) == pytest.approx(0.15)
    assert aupro(const, masks, fpr_limit=1.0) == pytest.approx(0.5)


def _two_region_scores(b_rest: float) -> np.ndarray:
    maps = np.full((1, 2, 7), 0.3)
    maps[0, 0, 0] = 0.9  # region A
    maps[0, 0, 4:7] = [0.8, b_rest, b_rest]  # region B: 1 of 3 px high
    maps[0, 1, 0] = 0.7  # one normal at 0.7
    maps[0, 1, 1] = 0.6  # one normal at 0.6; the other 8 normals stay 0.3
    return maps


def test_aupro_two_regions_region_mean_not_pixel_mean():
    """A (1 px) = 0.9; B (3 px) = 0.8, 0.05, 0.05; normals: 0.7, 0.6, 8 x 0.3 (10 total).

    t=0.9: FPR 0,   PRO (1 + 0)/2   = 1/2
    t=0.8: FPR 0,   PRO (1 + 1/3)/2 = 2/3
    t=0.7: FPR 0.1, PRO 2/3;  t=0.6: FPR 0.2, PRO 2/3;  t=0.3: FPR 1, PRO 2/3
    t=0.05: FPR 1,  PRO 1.
    Area up to 0.3 = 0.3 * 2/3 -> AUPRO = 2/3.  (Pooling pixels would give 2/4 = 0.5.)
    """
    maps = _two_region_scores(0.05)
    assert aupro(maps, _mask_two_regions(), fpr_limit=0.3) == pytest.approx(2 / 3)
    assert aupro(maps, _mask_two_regions(), fpr_limit=0.15) == pytest.approx(2 / 3)


def test_aupro_tie_and_fpr_limit_interpolation():
    """Same, but B's two low pixels score 0.3, tying with 8 normals.

    t=0.3 is one diagonal from (0.2, 2/3) to (1.0, 1).  At FPR 0.3 it is
    2/3 + (0.1/0.8) * (1/3) = 17/24.
    Area = 0.2 * 2/3 + 0.1 * (2/3 + 17/24)/2 = 2/15 + 11/160 = 97/480;  / 0.3 -> 97/144.
    Up to FPR 1: 0.2*2/3 + 0.8*(2/3+1)/2 = 2/15 + 2/3 = 0.8.
    """
    maps = _two_region_scores(0.3)
    masks = _mask_two_regions()
    assert aupro(maps, masks, fpr_limit=0.3) == pytest.approx(97 / 144)
    assert aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.8)
    # Binned approximation lands near the exact answer on this example.
    assert aupro(maps, masks, fpr_limit=0.3, num_thresholds=1000) == pytest.approx(97 / 144, abs=0.01)


def test_aupro_eight_connectivity_and_empty_images():
    """Image 0 mask {(0,0), (1,1), (2,1)}: ONE 8-connected region (4-conn would give two).

    Scores: (0,0)=1.0, the other two 0.0, normals 0.5; image 1 has an empty mask and
    one normal pixel at 2.0.  15 normal pixels in total.
    t=2.0: FPR 1/15, PRO 0;  t=1.0: FPR 1/15, PRO 1/3 (4-conn: (1+0)/2);  t=0.5: FPR 1.
    Area to 0.3 = (0.3 - 1/15) * 1/3 = 7/90  ->  AUPRO = 7/27.
    """
    masks = np.zeros((2, 3, 3), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 2, 1] = True
    maps = np.full(masks.shape, 0.5)
    maps[0, 0, 0], maps[0, 1, 1], maps[0, 2, 1] = 1.0, 0.0, 0.0
    maps[1, 2, 2] = 2.0
    assert aupro(maps, masks, fpr_limit=0.3) == pytest.approx(7 / 27)


def _reference_aupro(maps, masks, limit):
    """Brute force: every distinct score is a threshold, per-region loops, MVTec trapezoid."""
    import cv2

    regions, normal = [], ~masks
    for i, m in enumerate(masks):
        n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        regions += [(i, lab == k) for k in range(1, n)]
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        xs.append(float((maps[normal] >= t).sum() / normal.sum()))
        ys.append(float(np.mean([(maps[i][r] >= t).mean() for i, r in regions])))
    area = 0.0
    for x0, x1, y0, y1 in zip(xs[:-1], xs[1:], ys[:-1], ys[1:]):
        if x0 >= limit:
            break
        if x1 > limit:
            y1, x1 = y0 + (limit - x0) / (x1 - x0) * (y1 - y0), limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


@pytest.mark.parametrize("seed", range(6))
def test_aupro_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    maps = rng.integers(0, 5, size=(3, 8, 8)).astype(np.float64) if seed % 2 else rng.random((3, 8, 8))
    masks = np.zeros((3, 8, 8), dtype=bool)
    masks[0, 1:4, 1:3] = True
    masks[0, 6:8, 5:8] = True
    masks[2, 3:6, 2:7] = True
    maps[masks] += 0.5 * rng.random(int(masks.sum()))
    for limit in (0.05, 0.3, 1.0):
        expected = _reference_aupro(maps, masks, limit)
        assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(expected, abs=1e-12)


def test_aupro_errors():
    with pytest.raises(ValueError, match="region"):
        aupro(np.zeros((2, 4, 4)), np.zeros((2, 4, 4), bool))
    with pytest.raises(ValueError):
        aupro(np.zeros((1, 2, 2)), np.ones((1, 2, 2), bool))
    with pytest.raises(ValueError):
        aupro(np.zeros((1, 2, 2)), np.zeros((1, 2, 3), bool))
    with pytest.raises(ValueError):
        aupro(np.zeros((1, 2, 2)), np.eye(2, dtype=bool)[None], fpr_limit=0)


# ---------------------------------------------------------------- calibration / stats


def test_threshold_for_frr_exact_count():
    scores = np.arange(1000, dtype=np.float64)[::-1].copy()
    t = threshold_for_false_reject_rate(scores, 0.005)
    assert (scores >= t).sum() == 5
    assert t == np.nextafter(994.0, np.inf)  # smallest float with only 5 at or above
    # rounding guard: 0.29 * 100 = 28.999... must still allow 29 rejects
    assert (np.arange(100.0) >= threshold_for_false_reject_rate(np.arange(100.0), 0.29)).sum() == 29


def test_threshold_for_frr_tiny_target_and_ties():
    s = np.array([0.1, 0.2, 0.3])
    assert threshold_for_false_reject_rate(s, 0.001) == np.nextafter(0.3, np.inf)
    assert threshold_for_false_reject_rate(s, 0.0) == np.nextafter(0.3, np.inf)
    # ties at the cut are all accepted: 10 scores, 2 allowed, but the 2nd and 3rd largest tie
    tied = np.array([1, 2, 3, 4, 5, 6, 7, 8, 8, 9], dtype=float)
    t = threshold_for_false_reject_rate(tied, 0.2)
    assert t == np.nextafter(8.0, np.inf)
    assert (tied >= t).sum() == 1
    with pytest.raises(ValueError):
        threshold_for_false_reject_rate(np.array([]), 0.01)
    with pytest.raises(ValueError):
        threshold_for_false_reject_rate(s, 1.0)


def test_score_stats():
    st = score_stats(np.arange(101, dtype=np.float32))
    assert set(st) == {"mean", "std", "min", "max", "p50", "p95", "p99", "n"}
    assert st["n"] == 101 and isinstance(st["n"], int)
    assert st["p50"] == 50.0 and st["p95"] == 95.0 and st["p99"] == 99.0
    assert st["min"] == 0.0 and st["max"] == 100.0 and st["mean"] == 50.0
    assert all(type(v) is float for k, v in st.items() if k != "n")
    json.dumps(st)


def test_per_type_metrics():
    types = ["good", "good", "scratch", "dent", "dent"]
    scores = np.array([0.1, 0.2, 0.9, 0.15, 0.8])
    masks = np.zeros((5, 4, 4), dtype=bool)
    masks[2, 0, 0] = masks[4, 3, 3] = True  # dent image 3 has no annotation
    maps = masks.astype(float)
    out = per_type_metrics(types, scores, maps, masks)
    assert set(out["per_type"]) == {"dent", "scratch"}
    assert out["per_type"]["scratch"]["image_auroc"] == 1.0
    # dent: pos {0.15, 0.8} vs neg {0.1, 0.2}: 0.15>0.1, 0.8>both -> 3/4
    assert out["per_type"]["dent"]["image_auroc"] == pytest.approx(0.75)
    assert out["per_type"]["dent"]["n_defect"] == 2 and out["per_type"]["dent"]["n_good"] == 2
    assert out["per_type"]["scratch"]["aupro"] == pytest.approx(1.0)
    assert out["overall"]["pixel_auroc"] == pytest.approx(1.0)
    json.dumps(out)
    # No maps -> image metrics only; undefined pixel metric -> None, never NaN.
    assert "aupro" not in per_type_metrics(types, scores)["overall"]
    out2 = per_type_metrics(["good", "x"], [0.1, 0.2], np.zeros((2, 2, 2)), np.zeros((2, 2, 2), bool))
    assert out2["per_type"]["x"]["aupro"] is None and not any(
        isinstance(v, float) and math.isnan(v) for v in out2["overall"].values()
    )


def test_threshold_from_float32_scores_stays_above_them_in_float32():
    """Maps and scores are float32 on the device: the threshold must not round back onto the max."""
    import numpy as np

    from trainer.metrics import threshold_for_false_reject_rate

    scores = np.array([0.1, 0.2, 1.9800719], dtype=np.float32)
    thr = threshold_for_false_reject_rate(scores, 0.005)
    assert not (scores >= np.float32(thr)).any()
    assert not (scores.astype(np.float64) >= thr).any()
