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

The lines come in two kinds (``lines``). ``plain``: the line shapes themselves, as in checkpoints
written before the other existed. ``whitened``: each line shape divided, in the frequency domain, by
the power spectrum of the training normals' residual (``whitened_line_kernels``): the matched filter
for a known shape in correlated noise. A surface's grain is strong at the low spatial frequencies
where a 1 px scratch has little of its energy and weak where it has much, so dividing by the
spectrum listens where the scratch stands out; a camera's white noise sets the floor at the high
frequencies, so it does not blow them up. Measured on the tiling bench's grain with 1.5 grey levels
of sensor noise, the plain lines find 1 of 16 scratches of 5-12 px, the whitened ones 14
(``bench/contrast_filters.py``). The whitened kernels are fitted and saved with the weights.

So a normal surface reads about 1 on average and a few units at its most, whatever its grain,
and a spot or a line that stands out of the grain reads more. It is a map at the input's own resolution; the fusion
(``inspector.model.nets.model``) takes, at each pixel, the larger of it and the other maps.
"""

from __future__ import annotations

import math
from typing import Literal

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


LINE_KINDS = ("plain", "whitened")
WHITENED_SIZE = 15  # side of a whitened line kernel, px (the spectrum is estimated on larger windows)
SPECTRUM_FLOOR = 0.01  # the spectrum is held at least this share of its median before dividing by it


def whitened_line_kernels(spectrum: torch.Tensor, length: float, width: float, orientations: int,
                          size: int = WHITENED_SIZE, floor: float = SPECTRUM_FLOOR) -> torch.Tensor:
    """(orientations, 1, size, size) matched filters for ``line_kernels`` shapes in noise of power
    ``spectrum`` (n, n: an FFT grid, the zero frequency at [0, 0]), each of unit Euclidean norm.

    Each line's transform is divided by the spectrum (held at ``floor`` times its median, so that a
    frequency the normals never showed is not amplified without bound; the zero frequency, which the
    residual has removed, is dropped) and brought back to a centred ``size``-px kernel."""
    n = spectrum.shape[-1]
    if spectrum.shape != (n, n) or n < size:
        raise ValueError(f"a spectrum of shape {tuple(spectrum.shape)} cannot give {size} px kernels")
    shapes = line_kernels(length, width, orientations)[:, 0].double()
    k = shapes.shape[-1]
    if k > n:
        raise ValueError(f"the spectrum's {n} px grid is smaller than a {k} px line")
    grid = torch.zeros(orientations, n, n, dtype=torch.float64)
    grid[:, :k, :k] = shapes
    grid = torch.roll(grid, (-(k // 2), -(k // 2)), dims=(1, 2))  # the line's centre at [0, 0]
    spectrum = spectrum.double()
    power = spectrum.clamp_min(floor * float(spectrum.median()))
    response = torch.fft.fft2(grid) / power
    response[:, 0, 0] = 0
    kernels = torch.fft.fftshift(torch.fft.ifft2(response).real, dim=(1, 2))
    c, r = n // 2, size // 2
    kernels = kernels[:, c - r:c + r + 1, c - r:c + r + 1]
    kernels = kernels / kernels.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return kernels.float()[:, None].contiguous()


class LocalContrast(nn.Module):
    """Normalised images (B,3,H,W) → (B,1,H,W) largest matched-filter response over its normal level.

    ``std``: the teacher's per-channel normalisation, which brings the input back to grey levels.
    ``lines``: ``plain`` or ``whitened`` (module docstring); whitened kernels are a saved buffer,
    zero until ``trainer.signals`` fits them."""

    def __init__(self, std: tuple[float, float, float], *, lines: Literal["plain", "whitened"] = "plain",
                 background_sigma: float = 8.0, spot_sigma: float = 1.0, line_length: float = 11.0,
                 line_width: float = 0.8, orientations: int = 12):
        super().__init__()
        if lines not in LINE_KINDS:
            raise ValueError(f"unknown contrast lines {lines!r}; choose one of {LINE_KINDS}")
        self.line_kind = lines
        self.line_shape = (line_length, line_width, orientations)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("background", gaussian_kernel1d(background_sigma), persistent=False)
        self.register_buffer("difference", torch.tensor([1.0, -1.0]).view(1, 2, 1, 1), persistent=False)
        self.register_buffer("spot", gaussian_kernel1d(spot_sigma), persistent=False)
        if lines == "plain":
            self.register_buffer("lines", line_kernels(line_length, line_width, orientations), persistent=False)
        else:
            self.register_buffer("lines", torch.zeros(orientations, 1, WHITENED_SIZE, WHITENED_SIZE))
        #: each filter's root mean square response on the training normals (saved with the weights)
        self.register_buffer("rms", torch.ones(1 + orientations))

    @property
    def filters(self) -> int:
        return int(self.rms.numel())

    def responses(self, images: torch.Tensor) -> torch.Tensor:
        """(B, filters, H, W) absolute responses of the filter bank, not normalised."""
        return self.bank(self.residual(images))

    def residual(self, images: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) grey level minus its local background, what the filters read."""
        # the grey level up to a constant (the channel means and the frame's mean level drop out
        # of the residual): values near 0 keep their precision when a graph runs in bf16
        grey = (images.float() * self.std).mean(dim=1, keepdim=True)
        grey = grey - grey.mean(dim=(2, 3), keepdim=True)
        # grey − background, written as a 1×1 convolution of the two stacked: OpenVINO's CPU plugin
        # (2026.4) got the plain subtraction of these two branches wrong in the exported graph
        # (tests/unit/test_contrast.py runs the graph on OpenVINO against torch)
        return F.conv2d(torch.cat([grey, separable_blur(grey, self.background)], dim=1), self.difference)

    def bank(self, residual: torch.Tensor) -> torch.Tensor:
        """(B, filters, H, W) absolute responses of the blob and line filters to a (B,1,H,W) residual.

        The residual is zero-mean, so the blob and plain lines pad it with zeros: at the input's edges
        they see fewer pixels and respond less, where a mirrored border would repeat pixels and
        respond more than the surface does (a false peak at every tile edge). A whitened line cut
        short by the edge loses the side lobes that cancel the grain and responds about twice as
        high as anywhere inside, so whitened lines are computed only where the kernel lies wholly
        inside the input, and the band within its radius of the edge takes the response of the
        nearest such position. A tile's band is covered by its neighbour's interior where the overlap
        is wider than the radius (7 px; the default overlap of 256 px tiles is 32); at a frame's own
        edge, a scratch running along it within a few pixels reads weaker."""
        r = self.lines.shape[-1] // 2
        if self.line_kind == "whitened":
            lines = F.pad(F.conv2d(residual, self.lines), (r, r, r, r), mode="replicate")
        else:
            lines = F.conv2d(residual, self.lines, padding=r)
        return torch.cat([separable_blur(residual, self.spot, mirror=False), lines], dim=1).abs()

    def set_whitening(self, spectrum: torch.Tensor) -> None:
        """Fit the whitened lines to the training normals' residual ``spectrum`` (an n×n FFT grid)."""
        if self.line_kind != "whitened":
            raise ValueError("plain contrast lines are not fitted")
        self.lines.copy_(whitened_line_kernels(spectrum, *self.line_shape, size=self.lines.shape[-1]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.responses(images) / self.rms.view(1, -1, 1, 1)).amax(dim=1, keepdim=True)
