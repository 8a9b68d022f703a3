"""Dual-Student Knowledge Distillation (DSKD, Yao & Gao 2024) — our design; no public code exists.

The paper states: one frozen teacher, two students of the teacher's scale with inverted structures
(a forward, encoder-like student Se and a reverse, decoder-like student Sd), pyramid matching on
every scale, and a deep-feature (DF) embedding module through which the students interact. The
layers of the DF module and the loss weights are not published; this is how we built them:

* **Se (forward student)** — a ResNet-like encoder from the image, randomly initialised, with the
  teacher's channel widths: a 2-conv stem to stride 4, then three stages (strides 4, 8, 16). It is
  distilled on the three teacher maps (the STPM direction: same input as the teacher).
* **DF embedding module** — the one-class bottleneck of RD4AD, extended: it fuses the teacher's
  pyramid (as OCBE does) *and* Se's own pyramid, each brought to stride 16 by a multi-scale
  fusion, and compresses both into one code at stride 32. Gradients of Sd's loss flow through the
  module into Se, so Se's deep features are shaped to be useful to Sd: that is the "discussion".
  At test time Se's view of an anomaly is normal-looking (it never learnt the anomaly), so the
  code Sd decodes is pulled further towards normal, and Sd's discrepancy grows where it should.
* **Sd (reverse student)** — the RD4AD reverse decoder from the DF code to the three maps.
* **Output heads** — for teachers whose taps are signed (EfficientNet's linear bottlenecks), both
  students end each scale with a linear 1×1 projection (see ``blocks.output_heads``).
* **Loss** — the same cosine distillation loss on every scale for both students, weights 1 : 1.
* **Anomaly map** — per scale and per student 1 − cos(teacher, student), summed over scales and
  students (see ``discrepancy.py``).

Ablations (``variant``): ``rd`` (Sd only, teacher-only bottleneck = RD4AD), ``forward`` (Se only),
``dual_no_df`` (both students trained side by side, Sd fed by the teacher-only bottleneck, no
interaction), ``dual`` (full DSKD).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from inspector.model.nets.blocks import conv_bn_relu, forward_stage, kaiming_init, output_heads
from inspector.model.nets.reverse import MultiScaleFusion, OneClassBottleneck, ReverseDecoder
from inspector.model.nets.teachers import TeacherSpec

Variant = Literal["dual", "dual_no_df", "forward", "rd"]
VARIANTS: tuple[str, ...] = ("dual", "dual_no_df", "forward", "rd")


class ForwardStudent(nn.Module):
    """Se: an encoder with the teacher's pyramid widths, trained from scratch."""

    def __init__(self, spec: TeacherSpec):
        super().__init__()
        c1, c2, c3 = spec.channels
        stem = max(16, c1 // 2)
        self.stem = nn.Sequential(conv_bn_relu(3, stem, 2), conv_bn_relu(stem, c1, 2))
        self.stage1 = forward_stage(spec.block, c1, c1, spec.layers[0], 1, spec.base_width)
        self.stage2 = forward_stage(spec.block, c1, c2, spec.layers[1], 2, spec.base_width)
        self.stage3 = forward_stage(spec.block, c2, c3, spec.layers[2], 2, spec.base_width)
        self.heads = output_heads(spec)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.stage1(self.stem(images))
        f2 = self.stage2(f1)
        return self.heads([f1, f2, self.stage3(f2)])


class DeepFeatureEmbedding(nn.Module):
    """DF module: fuse the teacher's and Se's pyramids into one compact code for Sd."""

    def __init__(self, spec: TeacherSpec):
        super().__init__()
        self.student_fusion = MultiScaleFusion(spec.channels)
        self.core = OneClassBottleneck(spec, in_extra=self.student_fusion.out_channels)

    def forward(self, teacher_feats: list[torch.Tensor], student_feats: list[torch.Tensor]) -> torch.Tensor:
        return self.core(teacher_feats, extra=self.student_fusion(student_feats))


class DualStudent(nn.Module):
    """Student side of DSKD. ``forward(images, teacher_feats)`` returns one pyramid per student."""

    def __init__(self, spec: TeacherSpec, variant: Variant = "dual"):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown DSKD variant {variant!r}; choose one of {VARIANTS}")
        self.variant = variant
        self.forward_student = ForwardStudent(spec) if variant != "rd" else None
        if variant == "dual":
            self.bottleneck: nn.Module | None = DeepFeatureEmbedding(spec)
        elif variant in ("dual_no_df", "rd"):
            self.bottleneck = OneClassBottleneck(spec)
        else:
            self.bottleneck = None
        self.reverse_student = ReverseDecoder(spec) if self.bottleneck is not None else None
        kaiming_init(self)

    def forward(self, images: torch.Tensor, teacher_feats: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        out: list[list[torch.Tensor]] = []
        se = self.forward_student(images) if self.forward_student is not None else None
        if se is not None:
            out.append(se)
        if self.reverse_student is not None:
            code = self.bottleneck(teacher_feats, se) if self.variant == "dual" else self.bottleneck(teacher_feats)
            out.append(self.reverse_student(code))
        return out
