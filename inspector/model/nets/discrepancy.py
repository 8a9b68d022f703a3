"""Batched anomaly maps and image scores, all in torch on the model's device.

Per scale: 1 − cosine over channels, bilinear upsampling to the input size; sum over scales (and
students); optionally the same for the features' norm ratio (``norm_ratio``); Gaussian smoothing (σ = 4, kernel 33, borders mirrored like scipy's default ``reflect``) as two
separable 1-D convolutions. The image score is the map's maximum, or the mean of its top-k pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _symmetric_pad(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Pad by mirroring including the edge sample (scipy.ndimage's ``reflect``: d c b a | a b c d)."""
    n = x.shape[dim]
    if n >= r:
        left = x.narrow(dim, 0, r).flip(dim)
        right = x.narrow(dim, n - r, r).flip(dim)
        return torch.cat([left, x, right], dim=dim)
    pad = [0, 0, 0, 0]
    pad[0 if dim == -1 else 2], pad[1 if dim == -1 else 3] = r, r
    return F.pad(x, pad, mode="replicate")  # maps smaller than the kernel: nothing to mirror


def separable_blur(x: torch.Tensor, kernel: torch.Tensor, mirror: bool = True) -> torch.Tensor:
    """(B,1,H,W) convolved with a 1-D ``kernel`` along both axes, the same size out; borders
    mirrored like scipy's ``reflect`` (``mirror``) or padded with zeros."""
    k = kernel.to(x.dtype)
    r = k.numel() // 2
    if mirror:
        x = F.conv2d(_symmetric_pad(x, r, dim=-1), k.view(1, 1, 1, -1))
        return F.conv2d(_symmetric_pad(x, r, dim=-2), k.view(1, 1, -1, 1))
    x = F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, r))
    return F.conv2d(x, k.view(1, 1, -1, 1), padding=(r, 0))


NORM_EPS = 1e-6  # keeps the log of a feature norm finite where a feature vector is all zeros


class AnomalyMapper(nn.Module):
    """Turns teacher and student pyramids into smoothed anomaly maps of shape (B, H, W)."""

    def __init__(self, sigma: float = 4.0):
        super().__init__()
        self.sigma = sigma
        self.register_buffer("kernel", gaussian_kernel1d(sigma), persistent=False)

    def raw(self, teacher: list[torch.Tensor], students: list[list[torch.Tensor]], size: tuple[int, int]) -> torch.Tensor:
        total = None
        for student in students:
            for t, s in zip(teacher, student, strict=True):
                d = 1.0 - F.cosine_similarity(t.float(), s.float(), dim=1).unsqueeze(1)
                d = F.interpolate(d, size=size, mode="bilinear", align_corners=False)
                total = d if total is None else total + d
        return total  # (B, 1, H, W)

    def norm_ratio(self, teacher: list[torch.Tensor], students: list[list[torch.Tensor]],
                   size: tuple[int, int]) -> torch.Tensor:
        """|log(‖student‖ / ‖teacher‖)| over channels at each position, summed and smoothed like the
        cosine map, (B, H, W). The cosine compares only the features' directions, so a student that
        reproduces a feature's direction at the wrong magnitude (a brightness or contrast change the
        teacher's features grow or shrink with) looks normal to it; this map is the other half."""
        total = None
        for student in students:
            for t, s in zip(teacher, student, strict=True):
                r = (torch.log(s.float().norm(dim=1, keepdim=True) + NORM_EPS)
                     - torch.log(t.float().norm(dim=1, keepdim=True) + NORM_EPS)).abs()
                r = F.interpolate(r, size=size, mode="bilinear", align_corners=False)
                total = r if total is None else total + r
        return self.smooth(total).squeeze(1)

    def smooth(self, maps: torch.Tensor) -> torch.Tensor:
        if self.sigma <= 0:
            return maps
        return separable_blur(maps, self.kernel)

    def forward(self, teacher: list[torch.Tensor], students: list[list[torch.Tensor]], size: tuple[int, int]) -> torch.Tensor:
        return self.smooth(self.raw(teacher, students, size)).squeeze(1)


def image_scores(maps: torch.Tensor, mode: str = "max", topk_fraction: float = 0.01,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """Image score per map: the maximum, or the mean of the top ``topk_fraction`` of pixels; with a
    bool ``valid`` (B,H,W), of the valid pixels only (the frame's part of a padded input)."""
    if valid is not None:
        if mode not in ("max", "topk"):
            raise ValueError(f"unknown score mode {mode!r}; choose 'max' or 'topk'")
        return torch.stack([image_scores(m[v].view(1, -1), mode, topk_fraction)[0] for m, v in zip(maps, valid)])
    flat = maps.flatten(1)
    if mode == "max":
        return flat.amax(dim=1)
    if mode == "topk":
        k = max(1, math.ceil(topk_fraction * flat.shape[1]))
        return flat.topk(k, dim=1).values.mean(dim=1)
    raise ValueError(f"unknown score mode {mode!r}; choose 'max' or 'topk'")
