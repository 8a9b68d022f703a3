"""RD4AD (Deng & Li, CVPR 2022): one-class bottleneck embedding + reverse decoder.

Built from a teacher spec so it fits every registered teacher. With ``wide_resnet50_2`` the shapes
are the paper's: fusion to 3×1024 channels at 1/16, embedding 2048 @ 1/32, decoder outputs
1024 @ 1/16, 512 @ 1/8, 256 @ 1/4.
"""

from __future__ import annotations

import torch
from torch import nn

from inspector.model.nets.blocks import conv_bn_relu, forward_stage, kaiming_init, output_heads, reverse_stage
from inspector.model.nets.teachers import TeacherSpec


class MultiScaleFusion(nn.Module):
    """Bring the three pyramid levels to stride 16 and concatenate (3 × c3 channels)."""

    def __init__(self, channels: tuple[int, int, int]):
        super().__init__()
        c1, c2, c3 = channels
        self.down1 = nn.Sequential(conv_bn_relu(c1, c2, 2), conv_bn_relu(c2, c3, 2))
        self.down2 = conv_bn_relu(c2, c3, 2)
        self.out_channels = 3 * c3

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([self.down1(feats[0]), self.down2(feats[1]), feats[2]], dim=1)


class OneClassBottleneck(nn.Module):
    """OCBE: multi-scale fusion followed by a ``layer4``-like stage (stride 2) into a compact code."""

    def __init__(self, spec: TeacherSpec, in_extra: int = 0):
        super().__init__()
        self.fusion = MultiScaleFusion(spec.channels)
        self.embed = forward_stage(spec.block, self.fusion.out_channels + in_extra, spec.embed_channels,
                                   spec.layers[0], 2, spec.base_width)

    def forward(self, feats: list[torch.Tensor], extra: torch.Tensor | None = None) -> torch.Tensor:
        fused = self.fusion(feats)
        if extra is not None:
            fused = torch.cat([fused, extra], dim=1)
        return self.embed(fused)


class ReverseDecoder(nn.Module):
    """The student D: three transposed stages mirroring the teacher's layer3, layer2, layer1."""

    def __init__(self, spec: TeacherSpec):
        super().__init__()
        c1, c2, c3 = spec.channels
        b = spec.block
        self.stage3 = reverse_stage(b, spec.embed_channels, c3, spec.layers[0], spec.base_width)
        self.stage2 = reverse_stage(b, c3, c2, spec.layers[1], spec.base_width)
        self.stage1 = reverse_stage(b, c2, c1, spec.layers[2], spec.base_width)
        self.heads = output_heads(spec)

    def forward(self, code: torch.Tensor) -> list[torch.Tensor]:
        f3 = self.stage3(code)
        f2 = self.stage2(f3)
        return self.heads([self.stage1(f2), f2, f3])


class ReverseDistillation(nn.Module):
    """Student side of RD4AD. ``forward(images, teacher_feats)`` returns one student's pyramid."""

    def __init__(self, spec: TeacherSpec):
        super().__init__()
        self.bottleneck = OneClassBottleneck(spec)
        self.decoder = ReverseDecoder(spec)
        kaiming_init(self)

    def forward(self, images: torch.Tensor, teacher_feats: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        return [self.decoder(self.bottleneck(teacher_feats))]
