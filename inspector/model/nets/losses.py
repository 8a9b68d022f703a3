"""Distillation losses: 1 − cosine between teacher and student maps, summed over the scales.

``map`` flattens each whole C×H×W map into one vector per image (the RD4AD reference code);
``pixel`` takes the cosine over channels at every position and averages (what the paper writes).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

LossKind = Literal["map", "pixel"]


def cosine_distillation_loss(teacher: list[torch.Tensor], students: list[list[torch.Tensor]], kind: LossKind = "map") -> torch.Tensor:
    total = teacher[0].new_zeros(())
    for student in students:
        for t, s in zip(teacher, student, strict=True):
            t, s = t.float(), s.float()
            if kind == "map":
                cos = F.cosine_similarity(t.flatten(1), s.flatten(1), dim=1)
            elif kind == "pixel":
                cos = F.cosine_similarity(t, s, dim=1).flatten(1).mean(1)
            else:
                raise ValueError(f"unknown loss kind {kind!r}; choose 'map' or 'pixel'")
            total = total + (1.0 - cos).mean()
    return total
