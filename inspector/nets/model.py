"""A teacher plus its students: the whole discrepancy model, built from a small config."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .discrepancy import AnomalyMapper, image_scores
from .dual import DualStudent
from .reverse import ReverseDistillation
from .teachers import Teacher

METHODS = ("rd", "dskd")


@dataclass(frozen=True)
class ModelConfig:
    method: str = "rd"  # "rd" or "dskd"
    variant: str = "dual"  # DSKD ablation; ignored for rd
    sigma: float = 4.0
    score_mode: str = "max"  # "max" or "topk"
    topk_fraction: float = 0.01


def build_student(config: ModelConfig, teacher: Teacher) -> nn.Module:
    if config.method == "rd":
        return ReverseDistillation(teacher.spec)
    if config.method == "dskd":
        return DualStudent(teacher.spec, config.variant)  # type: ignore[arg-type]
    raise ValueError(f"unknown method {config.method!r}; choose one of {METHODS}")


class DiscrepancyModel(nn.Module):
    """Teacher (frozen, not saved with the students) + students + map head."""

    def __init__(self, teacher: Teacher, student: nn.Module, config: ModelConfig):
        super().__init__()
        self.teacher = teacher
        self.student = student
        self.config = config
        self.mapper = AnomalyMapper(config.sigma)

    def features(self, images: torch.Tensor, teacher_feats: list[torch.Tensor] | None = None):
        if teacher_feats is None:
            with torch.no_grad():
                teacher_feats = self.teacher(images)
        return teacher_feats, self.student(images, teacher_feats)

    @torch.no_grad()
    def maps_and_scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images (B,3,S,S) → smoothed maps (B,S,S) and image scores (B,)."""
        teacher_feats, students = self.features(images)
        # Maps are compared with a float32 threshold: under a bf16 autocast only the networks run
        # in bf16; the cosine, upsampling and 33-tap blur stay float32 (``raw`` upcasts).
        with torch.autocast(images.device.type, enabled=False):
            maps = self.mapper(teacher_feats, students, tuple(images.shape[-2:]))
            return maps, image_scores(maps, self.config.score_mode, self.config.topk_fraction)

    def student_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous() for k, v in self.student.state_dict().items()}
