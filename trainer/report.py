"""Evaluation figures: ROC plots and heat-map overlays written as PNG files.

Plots use ``matplotlib.figure.Figure`` with the Agg canvas directly, so nothing
here touches pyplot or the global backend (safe in workers and tests).
Image arrays follow docs/CONTRACTS.md: (H, W) or (H, W, 3) RGB, uint8/uint16.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["plot_roc", "roc_curve_points", "heatmap_overlay", "overlay_grid"]


def _write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Encode with OpenCV (expects BGR) and write bytes ourselves (works for any path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode PNG for {path}")
    path.write_bytes(buf.tobytes())
    return path


def roc_curve_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(fpr, tpr, auc) from sklearn, ready to put in the ``curves`` dict of :func:`plot_roc`."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if labels.all() or not labels.any():
        raise ValueError("ROC curve needs both good and defect samples")
    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr, float(roc_auc_score(labels, scores))


def plot_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]],
    path: str | Path,
    title: str = "ROC",
) -> Path:
    """Plot one ROC curve per entry ``name -> (fpr, tpr, auc)`` into a PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1)
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, linewidth=1.5, label=f"{name} (AUC {auc:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    if curves:
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any contract image -> uint8 RGB.  uint16 is min-max stretched (sensors often use 10-12 bits)."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"image must be (H, W) or (H, W, 3), got {img.shape}")
    if img.dtype != np.uint8:
        if img.dtype.kind not in "uif":
            raise ValueError(f"unsupported image dtype {img.dtype}")
        f = img.astype(np.float64)
        lo, hi = float(f.min()), float(f.max())
        f = (f - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(f)
        img = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img)


def heatmap_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    vmax: float | None = None,
    mask: np.ndarray | None = None,
    vmin: float | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend a JET-coloured anomaly map onto ``image``; returns uint8 RGB (H, W, 3).

    ``heatmap`` (any size) is resized to the image.  It is scaled from ``vmin``
    (default: its min) to ``vmax`` (default: its max); pass fixed values, e.g.
    0 and 2*threshold, to make tiles comparable.  ``mask`` (ground truth, any
    size) is drawn as a green contour.
    """
    base = _to_rgb8(image)
    h, w = base.shape[:2]
    hm = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if hm.ndim != 2:
        raise ValueError(f"heatmap must be 2-D, got {hm.shape}")
    hm = cv2.resize(hm, (w, h), interpolation=cv2.INTER_LINEAR)
    lo = float(hm.min()) if vmin is None else float(vmin)
    hi = float(hm.max()) if vmax is None else float(vmax)
    norm = (hm - lo) / (hi - lo) if hi > lo else np.zeros_like(hm)
    gray8 = np.clip(np.rint(norm * 255.0), 0, 255).astype(np.uint8)
    color = cv2.cvtColor(cv2.applyColorMap(gray8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    out = cv2.addWeighted(base, 1.0 - alpha, color, alpha, 0.0)
    if mask is not None:
        m = np.asarray(mask).astype(np.uint8)
        if m.ndim != 2:
            raise ValueError(f"mask must be 2-D, got {m.shape}")
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (0, 255, 0), max(1, round(min(h, w) / 256)))
    return out


def overlay_grid(
    tiles: Sequence[np.ndarray],
    captions: Sequence[str],
    path: str | Path,
    cols: int = 4,
    tile_size: tuple[int, int] | None = None,
) -> Path:
    """Write RGB ``tiles`` as one PNG grid, each with its caption in a band above it.

    Tiles are resized to ``tile_size`` (h, w), default the first tile's size.
    """
    if not tiles:
        raise ValueError("no tiles")
    if len(captions) != len(tiles):
        raise ValueError(f"{len(tiles)} tiles but {len(captions)} captions")
    if cols < 1:
        raise ValueError("cols must be >= 1")
    th, tw = tile_size if tile_size is not None else _to_rgb8(tiles[0]).shape[:2]
    cols = min(cols, len(tiles))
    rows = -(-len(tiles) // cols)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, (0.4 if tw < 300 else 0.6)
    (_, text_h), baseline = cv2.getTextSize("Ag", font, scale, 1)
    band, pad = text_h + baseline + 6, 4
    cell_h, cell_w = th + band + pad, tw + pad
    grid = np.full((rows * cell_h + pad, cols * cell_w + pad, 3), 255, dtype=np.uint8)
    for i, (tile, caption) in enumerate(zip(tiles, captions)):
        t = _to_rgb8(tile)
        if t.shape[:2] != (th, tw):
            t = cv2.resize(t, (tw, th), interpolation=cv2.INTER_AREA)
        r, c = divmod(i, cols)
        y, x = pad + r * cell_h, pad + c * cell_w
        grid[y + band : y + band + th, x : x + tw] = t
        org = (x + 2, y + band - baseline - 3)
        cv2.putText(grid, str(caption), org, font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return _write_png(path, grid)
