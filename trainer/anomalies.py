"""Synthetic anomalies painted on normal images, for choosing the training epoch without real defects.

Three kinds, each a different way a part can be wrong, none drawn from a real defect set:

* ``patch`` — a piece of another normal image, cut along a smooth random outline and pasted at
  another place (CutPaste, Li et al. 2021): normal texture in the wrong place, seams.
* ``texture`` — a smooth random region filled with a foreign texture: another normal image turned
  by 90°, zoomed in and re-toned, blended in (after DRAEM, Zavrtanik et al. 2021, which used
  Perlin-noise masks and an external texture set this product does not have).
* ``blob`` — a soft, low-contrast brightness and contrast change over a large area: the
  low-frequency kind of anomaly (magnetic_tile's ``uneven`` is one) that local texture cues miss.

Every image gets its own generator from ``(seed, index)``, so a painted set is reproducible and
one image's paint does not depend on the others. The mask is where the paint is: outside it the
pixels are unchanged (``patch``, ``texture``) or changed by less than half the peak (``blob``).
Painting happens on the model input (unit range, before normalisation) and only where the frame
lies (``valid``), never on a mirrored border.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["KINDS", "paint", "smooth_mask"]

KINDS = ("patch", "texture", "blob")


def smooth_mask(rng: np.random.Generator, h: int, w: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    """A bool (h, w) region with a smooth random outline inside ``box`` = (y0, y1, x0, x1): value
    noise (random values on a coarse grid, bicubic upsampling) cut at a level, kept to an ellipse
    so that the region is one compact area."""
    y0, y1, x0, x1 = box
    bh, bw = max(2, y1 - y0), max(2, x1 - x0)
    grid = torch.from_numpy(rng.random((1, 1, 4, 4)).astype(np.float32))
    noise = F.interpolate(grid, size=(bh, bw), mode="bicubic", align_corners=True)[0, 0]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, bh), torch.linspace(-1, 1, bw), indexing="ij")
    inside = (yy ** 2 + xx ** 2) <= 1.0
    level = float(np.quantile(noise[inside].numpy(), rng.uniform(0.2, 0.5)))
    region = (noise >= level) & inside
    if not region.any():
        region = inside
    out = torch.zeros((h, w), dtype=torch.bool)
    out[y0:y0 + bh, x0:x0 + bw] = region[: h - y0, : w - x0]
    return out


def _box(rng: np.random.Generator, area: tuple[int, int, int, int], lo: float, hi: float) -> tuple[int, int, int, int]:
    """A random box inside ``area`` (y0, y1, x0, x1) with sides ``lo``..``hi`` of the area's shorter side."""
    ay0, ay1, ax0, ax1 = area
    side = min(ay1 - ay0, ax1 - ax0)
    bh = max(2, int(side * rng.uniform(lo, hi)))
    bw = max(2, int(side * rng.uniform(lo, hi)))
    bh, bw = min(bh, ay1 - ay0), min(bw, ax1 - ax0)
    y0 = int(rng.integers(ay0, ay1 - bh + 1))
    x0 = int(rng.integers(ax0, ax1 - bw + 1))
    return y0, y0 + bh, x0, x0 + bw


def _area(valid: torch.Tensor | None, i: int, h: int, w: int) -> tuple[int, int, int, int]:
    if valid is None:
        return 0, h, 0, w
    ys = torch.nonzero(valid[i].any(dim=1)).flatten()
    xs = torch.nonzero(valid[i].any(dim=0)).flatten()
    return int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1


def paint(images: torch.Tensor, seed: int = 0, kinds: tuple[str, ...] = KINDS,
          valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Unit-range images (N,3,H,W) → (painted copies, bool masks (N,H,W), the kind of each).

    Image ``i`` gets kind ``kinds[i % len(kinds)]``; the pasted or foreign content comes from
    image ``i + 1`` (cyclically), another normal. Needs at least two images."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N,3,H,W) images, got {tuple(images.shape)}")
    n, _, h, w = images.shape
    if n < 2:
        raise ValueError("painting needs at least two normal images (one lends its content)")
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown anomaly kind {k!r}; known: {', '.join(KINDS)}")
    out = images.clone()
    masks = torch.zeros((n, h, w), dtype=torch.bool)
    names = []
    for i in range(n):
        rng = np.random.default_rng((seed, i))
        kind = kinds[i % len(kinds)]
        names.append(kind)
        area = _area(valid, i, h, w)
        donor = images[(i + 1) % n]
        if kind == "patch":
            box = _box(rng, area, 0.15, 0.35)
            m = smooth_mask(rng, h, w, box)
            dy = int(rng.integers(-box[0], h - box[1] + 1))
            dx = int(rng.integers(-box[2], w - box[3] + 1))
            shifted = torch.roll(donor, shifts=(dy, dx), dims=(1, 2))
            out[i][:, m] = shifted[:, m]
        elif kind == "texture":
            box = _box(rng, area, 0.2, 0.45)
            m = smooth_mask(rng, h, w, box)
            foreign = donor.transpose(1, 2)  # turned by 90°: the texture runs the wrong way
            foreign = F.interpolate(foreign[None], scale_factor=2.0, mode="bilinear", align_corners=False)[0]
            foreign = F.interpolate(foreign[None], size=(h, w), mode="bilinear", align_corners=False)[0]
            tone = float(rng.uniform(0.6, 1.4))
            beta = float(rng.uniform(0.6, 1.0))  # opacity of the foreign texture
            fill = (foreign - foreign.mean()) * tone + images[i].mean()
            out[i][:, m] = (1 - beta) * images[i][:, m] + beta * fill[:, m]
        else:  # blob
            ay0, ay1, ax0, ax1 = area
            side = min(ay1 - ay0, ax1 - ax0)
            cy, cx = rng.uniform(ay0, ay1), rng.uniform(ax0, ax1)
            s = side * rng.uniform(0.15, 0.35)
            yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                    indexing="ij")
            weight = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
            weight[weight < 0.05] = 0.0  # a bounded support: beyond it nothing changes
            if valid is not None:
                weight = weight * valid[i]
            shift = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.08, 0.2))
            gain = float(rng.uniform(0.8, 1.25))
            mean = images[i].mean()
            changed = (images[i] - mean) * gain + mean + shift
            out[i] = images[i] + weight * (changed - images[i])
            m = weight >= 0.5
        if valid is not None:
            out[i] = torch.where(valid[i], out[i], images[i])
            m = m & valid[i]
        masks[i] = m
    return out.clamp_(0.0, 1.0), masks, names
