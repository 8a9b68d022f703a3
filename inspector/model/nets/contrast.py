"""A full-resolution local-contrast signal: small spots and thin lines that the teacher cannot resolve.

The teacher's finest features have a stride of 4 input pixels, and a few-pixel spot or a 1 px
scratch moves them less than a fine surface grain does (measured: ``bench/small_defects.py``). The
pixels themselves still show it: the defect departs from its local background more than the
normal surface ever does. ``LocalContrast`` reads that off the input image, training-free:

1. grey level (the mean of the channels, in unit-range grey levels) minus its local background
   (Gaussian, σ = ``background_sigma`` px, borders mirrored), which removes illumination and
   shading; the filters below pad this zero-mean residual with zeros at the input's edges;
2. a bank of matched filters on that residual: a small blob (Gaussian, σ = ``spot_sigma``) and
   ``orientations`` short lines (``line_length`` px long, ``line_width`` px across);
3. each filter's absolute response divided by its root mean square on the training normals
   (``rms``, fitted by ``trainer.signals``), and the largest of them at each pixel.

So a normal surface reads about 1 on average and a few units at its most, whatever its grain,
and a spot or a line that stands out of the grain reads more. It is a map at the input's own resolution; the fusion
(``inspector.model.nets.model``) takes, at each pixel, the larger of it and the other maps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from inspector.model.nets.discrepancy import gaussian_kernel1d, separable_blur


def line_kernels(length: float, width: float, orientations: int) -> torch.Tensor:
    """(orientations, 1, k, k) unit-sum kernels: a Gaussian ``width`` across and ``length``/4 along."""
    r = int(math.ceil(length / 2)) + 2
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
    out = []
    for i in range(orientations):
        t = math.pi * i / orientations
        along = xx * math.cos(t) + yy * math.sin(t)
        across = -xx * math.sin(t) + yy * math.cos(t)
        k = torch.exp(-0.5 * (across / width) ** 2 - 0.5 * (along / (length / 4)) ** 2)
        out.append(k / k.sum())
    return torch.stack(out)[:, None]


class LocalContrast(nn.Module):
    """Normalised images (B,3,H,W) → (B,1,H,W) largest matched-filter response over its normal level.

    ``std``: the teacher's per-channel normalisation, which brings the input back to grey levels."""

    def __init__(self, std: tuple[float, float, float], *,
                 background_sigma: float = 8.0, spot_sigma: float = 1.0, line_length: float = 11.0,
                 line_width: float = 0.8, orientations: int = 12):
        super().__init__()
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("background", gaussian_kernel1d(background_sigma), persistent=False)
        self.register_buffer("difference", torch.tensor([1.0, -1.0]).view(1, 2, 1, 1), persistent=False)
        self.register_buffer("spot", gaussian_kernel1d(spot_sigma), persistent=False)
        self.register_buffer("lines", line_kernels(line_length, line_width, orientations), persistent=False)
        #: each filter's root mean square response on the training normals (saved with the weights)
        self.register_buffer("rms", torch.ones(1 + orientations))

    @property
    def filters(self) -> int:
        return int(self.rms.numel())

    def responses(self, images: torch.Tensor) -> torch.Tensor:
        """(B, filters, H, W) absolute responses of the filter bank, not normalised."""
        # the grey level up to a constant (the channel means and the frame's mean level drop out
        # of the residual): values near 0 keep their precision when a graph runs in bf16
        grey = (images.float() * self.std).mean(dim=1, keepdim=True)
        grey = grey - grey.mean(dim=(2, 3), keepdim=True)
        # grey − background, written as a 1×1 convolution of the two stacked: OpenVINO's CPU plugin
        # (2026.4) got the plain subtraction of these two branches wrong in the exported graph
        # (tests/unit/test_contrast.py runs the graph on OpenVINO against torch)
        residual = F.conv2d(torch.cat([grey, separable_blur(grey, self.background)], dim=1), self.difference)
        return self.bank(residual)

    def bank(self, residual: torch.Tensor) -> torch.Tensor:
        """(B, filters, H, W) absolute responses of the blob and line filters to a (B,1,H,W) residual.

        The residual is zero-mean, so the filters pad it with zeros: at the input's edges they see
        fewer pixels and respond less, where a mirrored border would repeat pixels and respond more
        than the surface does (a false peak at every tile edge)."""
        lines = F.conv2d(residual, self.lines, padding=self.lines.shape[-1] // 2)
        return torch.cat([separable_blur(residual, self.spot, mirror=False), lines], dim=1).abs()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.responses(images) / self.rms.view(1, -1, 1, 1)).amax(dim=1, keepdim=True)
