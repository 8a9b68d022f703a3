"""A teacher plus its students (and, optionally, training-free signals): the whole model, built
from a small config.

Without signals the map is the students' discrepancy map and the score its maximum (or top-k
mean), as in RD4AD. With signals (``inspector.model.nets.signals``) every part is divided by its mean
image score on held-out validation normals, so that each contributes about 1 on a normal part:

    heatmap = (1 − w) · students' part + w · memory map / memory_scale
    students' part = (1 − a) · cosine map / student_scale + a · norm-ratio map / norm_scale
    score   = mean of (top-k mean of heatmap, global distance / gaussian_scale)

so a normal part scores about 1 whatever the teacher or the image size, and no part can drown the
others by its units alone. With the local-contrast map (``inspector.model.nets.contrast``, opt-in:
small spots and thin lines at the input's own resolution) the heatmap is, at each pixel, the larger
of the mix above and contrast map / contrast_scale: a defect that only one of them sees is not
averaged away. contrast_scale puts the contrast map's largest value on the validation normals at
the mix's largest (``trainer.signals.align_contrast``). The memory weight ``w`` is 1/2 unless the
fit chose it (``trainer fit --memory-weight auto``: the weight that best separates synthetic
anomalies painted on the validation normals, since how much each map can be trusted depends on
the surface). The norm-ratio map (``AnomalyMapper.norm_ratio``: where the students reproduce a
feature's direction but not its magnitude) joins the students' part with a = 1/2 when the fit
chose it the same way (``--norm-map auto``), and is not computed otherwise (a = 0, the cosine map
alone, as in every checkpoint before it). When the fit measured an edge profile, the heatmap's
bands near each frame's edge are equalised to the interior's normal variation after the graph
(``content_outputs``, ``inspector.model.nets.edges``), before the score reads its maximum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inspector.model.nets.contrast import LocalContrast
from inspector.model.nets.discrepancy import AnomalyMapper, image_scores
from inspector.model.nets.dual import DualStudent
from inspector.model.nets.edges import EDGE_BIN, Equaliser
from inspector.model.nets.reverse import ReverseDistillation
from inspector.model.nets.signals import GlobalGaussian, PatchMemory
from inspector.model.nets.teachers import Teacher

METHODS = ("rd", "dskd")
SIGNALS_PREFIX = "signals."
SIGNAL_PARTS = ("memory", "gaussian", "contrast")  # modules whose buffers are saved under SIGNALS_PREFIX


@dataclass(frozen=True)
class ModelConfig:
    method: str = "rd"  # "rd" or "dskd"
    variant: str = "dual"  # DSKD ablation; ignored for rd
    sigma: float = 4.0
    score_mode: str = "max"  # "max" or "topk"
    topk_fraction: float = 0.01
    memory_bank_size: int = 0  # rows of the patch memory bank; 0 = no patch memory
    memory_levels: tuple[int, ...] = (2,)
    memory_pool: int = 3
    gaussian: bool = False  # the global Gaussian of pooled teacher statistics
    gaussian_neighbours: int = 0  # its distance over that of the k nearest training normals; 0 = plain
    gaussian_references: int = 0  # training normals kept for that neighbourhood (a buffer's rows)
    student_scale: float = 1.0  # fusion normalisers (mean validation-normal score of each part)
    memory_scale: float = 1.0
    gaussian_scale: float = 1.0
    memory_weight: float = 0.5  # the memory map's share of the heatmap (the students' is the rest)
    norm_map: bool = False  # the students' part also reads their features' norm ratio (AnomalyMapper.norm_ratio)
    norm_weight: float = 0.5  # its share of the students' part (the cosine map has the rest)
    norm_scale: float = 1.0
    contrast: bool = False  # the full-resolution local-contrast map, fused by the pixel maximum
    contrast_scale: float = 1.0  # its largest value on the validation normals over the mix's largest
    contrast_lines: Literal["plain", "whitened"] = "plain"  # its line filters: "plain" shapes or "whitened" by the normals' spectrum
    edge_bin: int = EDGE_BIN  # edge equalisation (inspector.model.nets.edges): band width, input px
    edge_gain: tuple[float, ...] = ()  # per band from the frame's edge inwards; () = not equalised
    edge_offset: tuple[float, ...] = ()

    @property
    def fused(self) -> bool:
        return self.memory_bank_size > 0 or self.gaussian or self.contrast or self.norm_map


def build_student(config: ModelConfig, teacher: Teacher) -> nn.Module:
    if config.method == "rd":
        return ReverseDistillation(teacher.spec)
    if config.method == "dskd":
        return DualStudent(teacher.spec, config.variant)  # type: ignore[arg-type]
    raise ValueError(f"unknown method {config.method!r}; choose one of {METHODS}")


def gaussian_dim(teacher: Teacher) -> int:
    return 2 * sum(teacher.spec.channels)


class DiscrepancyModel(nn.Module):
    """Teacher (frozen, not saved with the students) + students + signals + map head."""

    def __init__(self, teacher: Teacher, student: nn.Module, config: ModelConfig):
        super().__init__()
        self.teacher = teacher
        self.student = student
        self.config = config
        self.mapper = AnomalyMapper(config.sigma)
        channels = teacher.spec.channels
        for level in config.memory_levels:
            if not 0 <= level < len(channels):
                raise ValueError(f"memory level {level} is not one of the teacher's levels 0..{len(channels) - 1}")
        self.memory = (PatchMemory(config.memory_bank_size, sum(channels[i] for i in config.memory_levels),
                                   config.memory_levels, config.memory_pool)
                       if config.memory_bank_size > 0 else None)
        self.gaussian = (GlobalGaussian(gaussian_dim(teacher), config.gaussian_neighbours, config.gaussian_references)
                         if config.gaussian else None)
        self.contrast = LocalContrast(teacher.spec.std, lines=config.contrast_lines) if config.contrast else None
        self._equaliser: Equaliser | None = None  # built from the config's edge profile when first used

    def features(self, images: torch.Tensor, teacher_feats: list[torch.Tensor] | None = None):
        if teacher_feats is None:
            with torch.no_grad():
                teacher_feats = self.teacher(images)
        return teacher_feats, self.student(images, teacher_feats)

    @torch.no_grad()
    def components(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each part on its own scale: ``student``, ``memory``, ``contrast`` maps (B,S,S), ``gaussian`` (B,)."""
        teacher_feats, students = self.features(images)
        size = tuple(images.shape[-2:])
        # Maps are compared with a float32 threshold: under a bf16 autocast only the networks run
        # in bf16; the cosine, distances, upsampling and 33-tap blur stay float32.
        with torch.autocast(images.device.type, enabled=False):
            out = {"student": self.mapper(teacher_feats, students, size)}
            if self.config.norm_map:
                out["norm"] = self.mapper.norm_ratio(teacher_feats, students, size)
            if self.memory is not None:
                near = F.interpolate(self.memory(teacher_feats), size=size, mode="bilinear", align_corners=False)
                out["memory"] = self.mapper.smooth(near).squeeze(1)
            if self.gaussian is not None:
                out["gaussian"] = self.gaussian(teacher_feats)
            if self.contrast is not None:
                out["contrast"] = self.contrast(images).squeeze(1)
        return out

    @torch.no_grad()
    def maps_and_scores(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images (B,3,S,S) → smoothed maps (B,S,S) and image scores (B,)."""
        parts = self.components(images)
        return self.fuse(parts)

    def fuse(self, parts: dict[str, torch.Tensor], valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Heatmap and score from ``components``' parts (any subset with at least one map); the
        map part of the score over the ``valid`` pixels when given (see ``content_outputs``)."""
        cfg = self.config
        if not cfg.fused:
            maps = parts["student"]
            return maps, image_scores(maps, cfg.score_mode, cfg.topk_fraction, valid)
        students = parts["student"] / cfg.student_scale if "student" in parts else None
        if "norm" in parts:
            norm = parts["norm"] / cfg.norm_scale
            a = cfg.norm_weight
            students = norm if students is None else (1.0 - a) * students + a * norm
        memory = parts["memory"] / cfg.memory_scale if "memory" in parts else None
        w = cfg.memory_weight
        maps = memory if students is None else students if memory is None else (1.0 - w) * students + w * memory
        if "contrast" in parts:
            contrast = parts["contrast"] / cfg.contrast_scale
            maps = contrast if maps is None else torch.maximum(maps, contrast)
        scores = image_scores(maps, cfg.score_mode, cfg.topk_fraction, valid)
        if "gaussian" in parts:
            scores = (scores + parts["gaussian"] / cfg.gaussian_scale) / 2.0
        return maps, scores

    def content_outputs(self, maps: torch.Tensor, scores: torch.Tensor,
                        valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``maps_and_scores``' outputs as a frame is judged: the maps edge-equalised when the fit
        measured a profile (``inspector.model.nets.edges``; ``valid``, B,H,W bool: each frame's part
        of a padded input, None: frames fill it), and the map part of each score taken again over
        the frame's pixels of those maps. ``fuse`` adds the map part with weight 1/2 when the
        global Gaussian is fused (else 1), so the difference between the new and the graph's
        map part carries over with that weight. The exported graph stays one input, one batch
        of frames; this runs after it."""
        cfg = self.config
        if valid is not None and bool(valid.all()):
            valid = None
        if not cfg.edge_gain:
            if valid is None:
                return maps, scores
            framed = maps
        else:
            framed = self.equaliser(maps, valid)
        whole = image_scores(maps, cfg.score_mode, cfg.topk_fraction)
        part = image_scores(framed, cfg.score_mode, cfg.topk_fraction, valid)
        weight = 0.5 if self.has_global_part else 1.0
        return framed, scores + weight * (part - whole)

    @property
    def equaliser(self) -> Equaliser:
        """The edge equalisation of the current config (rebuilt when the config's profile changes)."""
        cfg = self.config
        eq = self._equaliser
        if eq is None or (eq.bin, eq.gain, eq.offset) != (cfg.edge_bin, cfg.edge_gain, cfg.edge_offset):
            eq = self._equaliser = Equaliser(cfg.edge_bin, cfg.edge_gain, cfg.edge_offset)
        return eq

    @property
    def has_global_part(self) -> bool:
        return bool(self.config.fused and self.config.gaussian)

    def tile_outputs(self, maps: torch.Tensor, scores: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``maps_and_scores``' outputs for tiles → their maps and the global Gaussian's part of
        each score (``fuse`` averages it with the map part; zeros when it is not fused), on the CPU."""
        cfg = self.config
        if self.has_global_part:
            parts = (2.0 * scores - image_scores(maps, cfg.score_mode, cfg.topk_fraction)).float().cpu().numpy()
        else:
            parts = np.zeros(len(maps), np.float32)
        return maps.float().cpu().numpy(), parts

    @torch.no_grad()
    def frame_score(self, stitched: np.ndarray, tile_parts: np.ndarray) -> float:
        """The score of a tiled frame: the map part over its stitched map (H,W), averaged with the
        largest global part of its tiles when the Gaussian is fused (as ``fuse`` does)."""
        cfg = self.config
        part = float(image_scores(torch.from_numpy(stitched)[None].float(), cfg.score_mode, cfg.topk_fraction)[0])
        return (part + float(tile_parts.max())) / 2.0 if self.has_global_part else part

    def student_state(self) -> dict[str, torch.Tensor]:
        """Everything the checkpoint stores: the students' weights and the signals' buffers."""
        state = {k: v.detach().contiguous() for k, v in self.student.state_dict().items()}
        for name in SIGNAL_PARTS:
            part = getattr(self, name)
            if part is not None:
                state.update({f"{SIGNALS_PREFIX}{name}.{k}": v.detach().contiguous() for k, v in part.state_dict().items()})
        return state

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of ``student_state``; strict: a missing or unexpected tensor is an error."""
        student = {k: v for k, v in state.items() if not k.startswith(SIGNALS_PREFIX)}
        self.student.load_state_dict(student, strict=True)
        signals = {k[len(SIGNALS_PREFIX):]: v for k, v in state.items() if k.startswith(SIGNALS_PREFIX)}
        expected = {f"{n}.{k}" for n in SIGNAL_PARTS if getattr(self, n) is not None
                    for k in getattr(self, n).state_dict()}
        if set(signals) != expected:
            raise RuntimeError(f"signal tensors {sorted(signals)} do not fit the manifest's signals {sorted(expected)}")
        for name in SIGNAL_PARTS:
            part = getattr(self, name)
            if part is not None:
                part.load_state_dict({k[len(name) + 1:]: v for k, v in signals.items() if k.startswith(name + ".")}, strict=True)
