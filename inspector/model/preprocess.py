"""Decoded arrays → normalised model input, in torch on the target device.

Training, evaluation, ``inspector score`` and the streaming worker all go through here, so the
model sees exactly the same pixels in every path.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from inspector.model.geometry import Geometry, Placement


def to_unit_tensor(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H,W) or (H,W,C) uint8/uint16 → float (3,H,W) in [0,1] on ``device``."""
    if image.dtype == np.uint8:
        scale = 255.0
    elif image.dtype == np.uint16:
        scale = 65535.0
    else:
        raise TypeError(f"expected a uint8 or uint16 image, got {image.dtype}")
    t = torch.from_numpy(np.ascontiguousarray(image)).to(device, non_blocking=True)
    if t.ndim == 2:
        t = t.unsqueeze(0).expand(3, -1, -1)
    elif t.ndim == 3:
        t = t.permute(2, 0, 1)
        if t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        elif t.shape[0] == 4:
            t = t[:3]
        elif t.shape[0] != 3:
            raise ValueError(f"expected 1, 3 or 4 channels, got {t.shape[0]}")
    else:
        raise ValueError(f"expected a 2-D or 3-D image array, got shape {image.shape}")
    return t.float().div_(scale)


def as_geometry(geometry: Geometry | int) -> Geometry:
    """A ``Geometry``, or an int for the square stretched input of older checkpoints and tests."""
    return geometry if isinstance(geometry, Geometry) else Geometry.square(int(geometry))


def prepare_placed(images: Sequence[np.ndarray], geometry: Geometry | int, mean: Sequence[float],
                   std: Sequence[float], device: torch.device | str = "cpu") -> tuple[torch.Tensor, list[Placement]]:
    """Decoded images (any sizes) → one normalised batch (B,3,H,W) on ``device`` and where each
    frame lies in it (antialiased bilinear resize, ``inspector.model.geometry``)."""
    g = as_geometry(geometry)
    placed = [g.place(to_unit_tensor(img, device)) for img in images]
    batch = torch.stack([t for t, _ in placed])
    return normalize(batch, mean, std), [p for _, p in placed]


def prepare_batch(images: Sequence[np.ndarray], geometry: Geometry | int, mean: Sequence[float],
                  std: Sequence[float], device: torch.device | str = "cpu") -> torch.Tensor:
    """``prepare_placed`` without the placements (training, calibration)."""
    return prepare_placed(images, geometry, mean, std, device)[0]


def unnormalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Inverse of ``normalize``: model inputs back to the unit range."""
    m = torch.tensor(mean, device=batch.device, dtype=batch.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=batch.device, dtype=batch.dtype).view(1, 3, 1, 1)
    return batch * s + m


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, device=batch.device, dtype=batch.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=batch.device, dtype=batch.dtype).view(1, 3, 1, 1)
    return (batch - m) / s
