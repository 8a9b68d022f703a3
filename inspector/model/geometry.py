"""How a frame of any shape becomes the model's input, and how a map of the input maps back.

A model has one input of ``height`` × ``width`` pixels (multiples of the teacher's deepest
stride; the networks are fully convolutional). Two ways to get there:

* ``pad`` (default for new models): scale the frame uniformly until it fits, then fill the rest
  by mirroring the frame at its borders. Texture keeps its proportions, so the model does not
  have to learn every stretch of it as normal; mirrored content looks like the part, so it
  neither raises nor hides anomalies. When the frame has the input's aspect ratio (a line camera
  with a model fitted on its frames) nothing is padded.
* ``stretch``: resize to the input whatever the frame's shape (every checkpoint written before
  geometry existed: its manifest has no ``geometry`` and loads as a square ``stretch``).

``Placement`` records where the frame landed, so maps, masks and regions come back in the
frame's own pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["RESIZE_MODES", "STRIDE", "Geometry", "Placement", "as_hw", "choose_input_size", "parse_size"]

RESIZE_MODES = ("pad", "stretch")
STRIDE = 32  # the deepest stride of every student (RD's one-class embedding): sides are multiples of it


@dataclass(frozen=True)
class Placement:
    """Where a frame of ``frame_hw`` lies in the model input: rows ``y0:y1``, columns ``x0:x1``."""

    frame_hw: tuple[int, int]
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def content_hw(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0


@dataclass(frozen=True)
class Geometry:
    height: int
    width: int
    resize: str = "stretch"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"input size must be positive, got {self.height}x{self.width}")

    @classmethod
    def square(cls, size: int) -> "Geometry":
        """The geometry of a checkpoint written before this module (``image_size`` only)."""
        return cls(int(size), int(size), "stretch")

    @property
    def hw(self) -> tuple[int, int]:
        return self.height, self.width

    def describe(self) -> str:
        return f"{self.width}x{self.height} {self.resize}"

    def placement(self, frame_hw: tuple[int, int]) -> Placement:
        h, w = int(frame_hw[0]), int(frame_hw[1])
        if h <= 0 or w <= 0:
            raise ValueError(f"frame size must be positive, got {w}x{h}")
        if self.resize == "stretch":
            return Placement((h, w), 0, self.height, 0, self.width)
        scale = min(self.height / h, self.width / w)
        ch = min(self.height, max(1, round(h * scale)))
        cw = min(self.width, max(1, round(w * scale)))
        top, left = (self.height - ch) // 2, (self.width - cw) // 2
        return Placement((h, w), top, top + ch, left, left + cw)

    def place(self, image: torch.Tensor) -> tuple[torch.Tensor, Placement]:
        """(C,h,w) float frame → (C,H,W) model input and where the frame lies in it."""
        p = self.placement(tuple(image.shape[-2:]))
        resized = _resize(image, p.content_hw)
        if p.content_hw == self.hw:
            return resized, p
        return _mirror_pad(resized, p.y0, self.height - p.y1, p.x0, self.width - p.x1), p

    def fills(self, placements: Sequence[Placement]) -> bool:
        """Every frame fills the input: nothing is padded."""
        return all(p.content_hw == self.hw for p in placements)

    def valid_mask(self, placements: Sequence[Placement], device: torch.device | str = "cpu") -> torch.Tensor | None:
        """(B,H,W) bool: where each frame lies in its input; None when every frame fills it."""
        if self.fills(placements):
            return None
        mask = torch.zeros((len(placements), self.height, self.width), dtype=torch.bool, device=device)
        for i, p in enumerate(placements):
            mask[i, p.y0:p.y1, p.x0:p.x1] = True
        return mask

    def frame_map(self, input_map: torch.Tensor | np.ndarray, p: Placement) -> torch.Tensor | np.ndarray:
        """The part of an input-sized map (…,H,W) that covers the frame (…, content h, content w)."""
        return input_map[..., p.y0:p.y1, p.x0:p.x1]


def _resize(t: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(t.shape[-2:]) == tuple(hw):
        return t
    return F.interpolate(t.unsqueeze(0), size=hw, mode="bilinear", align_corners=False, antialias=True)[0]


def _mirror_pad(t: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflect padding of any width: mirror repeatedly while the pad is wider than the content."""
    while top or bottom or left or right:
        h, w = t.shape[-2:]
        # reflect needs pad < size; a 1-pixel side can only be replicated
        mode = "reflect" if min(h, w) > 1 else "replicate"
        lim_h, lim_w = (h - 1, w - 1) if mode == "reflect" else (max(top, bottom), max(left, right))
        step = (min(left, lim_w), min(right, lim_w), min(top, lim_h), min(bottom, lim_h))
        t = F.pad(t.unsqueeze(0), step, mode=mode)[0]
        left, right, top, bottom = left - step[0], right - step[1], top - step[2], bottom - step[3]
    return t


def as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """A square side or (height, width) → (height, width)."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' (or one number for a square) → (height, width)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"input size must be WIDTHxHEIGHT or one number, got {text!r}") from None
    if len(nums) == 1:
        nums = nums * 2
    if len(nums) != 2 or min(nums) <= 0:
        raise ValueError(f"input size must be WIDTHxHEIGHT or one number, got {text!r}")
    return nums[1], nums[0]


def choose_input_size(frame_sizes: Sequence[tuple[int, int]], area_side: int, stride: int = STRIDE) -> tuple[int, int]:
    """(height, width) for frames of these (h, w) sizes: the median aspect ratio (so a line camera's
    frames fill the input exactly), about ``area_side``² pixels, each side a multiple of ``stride``."""
    if not frame_sizes:
        raise ValueError("no frames to choose an input size from")
    aspect = float(np.median([w / h for h, w in frame_sizes]))  # width / height
    h = area_side / math.sqrt(aspect)
    w = area_side * math.sqrt(aspect)
    snap = lambda v: max(stride, int(round(v / stride)) * stride)  # noqa: E731
    return snap(h), snap(w)
