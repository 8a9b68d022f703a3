"""Residual blocks shared by the students: torchvision's forward blocks and their transposed twins."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck


def conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def forward_stage(block: str, cin: int, cout: int, blocks: int, stride: int, base_width: int = 64) -> nn.Sequential:
    """A ResNet stage (first block may stride) producing ``cout`` channels."""
    kind = BasicBlock if block == "basic" else Bottleneck
    planes = cout // kind.expansion
    down = None
    if stride != 1 or cin != cout:
        down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    extra = {"base_width": base_width} if kind is Bottleneck else {}
    layers = [kind(cin, planes, stride, down, **extra)]
    layers += [kind(cout, planes, **extra) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class DeBasicBlock(nn.Module):
    """BasicBlock run in reverse: a 2×2 transposed conv (stride 2) replaces the strided 3×3."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, upsample: nn.Module | None = None, base_width: int = 64):
        super().__init__()
        self.conv1 = (nn.ConvTranspose2d(cin, planes, 2, stride, bias=False) if stride == 2
                      else nn.Conv2d(cin, planes, 3, 1, 1, bias=False))
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.upsample is None else self.upsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class DeBottleneck(nn.Module):
    """Bottleneck run in reverse (the RD4AD decoder block)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, upsample: nn.Module | None = None, base_width: int = 64):
        super().__init__()
        width = int(planes * base_width / 64)
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = (nn.ConvTranspose2d(width, width, 2, stride, bias=False) if stride == 2
                      else nn.Conv2d(width, width, 3, 1, 1, bias=False))
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.upsample is None else self.upsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def reverse_stage(block: str, cin: int, cout: int, blocks: int, base_width: int = 64) -> nn.Sequential:
    """A decoder stage: doubles the resolution in its first block and ends with ``cout`` channels."""
    kind = DeBasicBlock if block == "basic" else DeBottleneck
    planes = cout // kind.expansion
    up = nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, 2, bias=False), nn.BatchNorm2d(cout))
    layers = [kind(cin, planes, 2, up, base_width)]
    layers += [kind(cout, planes, 1, None, base_width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def kaiming_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class OutputHeads(nn.Module):
    """Per-scale linear 1×1 projections, so a student's outputs can match signed teacher taps."""

    def __init__(self, channels: tuple[int, int, int]):
        super().__init__()
        self.heads = nn.ModuleList(nn.Conv2d(c, c, 1) for c in channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [h(f) for h, f in zip(self.heads, feats, strict=True)]


def output_heads(spec) -> nn.Module:
    """Linear heads for teachers with signed taps; identity for post-ReLU (ResNet) taps."""
    return OutputHeads(spec.channels) if spec.signed else nn.Identity()
