"""Decoded arrays → normalised model input, in torch on the target device.

Training, evaluation, ``inspector score`` and the streaming worker all go through here, so the
model sees exactly the same pixels in every path.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


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


def resize_unit(t: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of a (3,H,W) tensor to (3,size,size)."""
    if t.shape[-2:] == (size, size):
        return t
    return F.interpolate(t.unsqueeze(0), size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def prepare_batch(images: Sequence[np.ndarray], size: int, mean: Sequence[float], std: Sequence[float],
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """A list of decoded images (any sizes) → one normalised batch (B,3,size,size) on ``device``."""
    batch = torch.stack([resize_unit(to_unit_tensor(img, device), size) for img in images])
    return normalize(batch, mean, std)


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, device=batch.device, dtype=batch.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=batch.device, dtype=batch.dtype).view(1, 3, 1, 1)
    return (batch - m) / s
