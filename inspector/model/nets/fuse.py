"""Inference-only rewrites of a loaded model that keep its arithmetic (up to float rounding).

* ``fold_batchnorm``: every eval-mode BatchNorm that directly follows a convolution (also a
  transposed one) is folded into that convolution's weights and bias and replaced by Identity:
  one memory pass fewer per conv, and on a CPU those passes cost as much as the convs themselves.
* ``static_same_padding``: EfficientNet-Lite's "same" convolutions pad their input with ``F.pad``
  on every call (a full copy of the tensor). For stride 1 and odd kernels that padding is
  symmetric, so the convolution can do it itself; strided ones keep their dynamic padding.

Both return the number of layers changed; ``tests/unit/test_execution_plan.py`` checks outputs agree.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# (conv, bn) attribute pairs whose forward is ``bn(conv(x))`` in the named block classes.
_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "BasicBlock": (("conv1", "bn1"), ("conv2", "bn2")),
    "Bottleneck": (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    "DeBasicBlock": (("conv1", "bn1"), ("conv2", "bn2")),
    "DeBottleneck": (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
    "MBConvBlock": (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")),
    "_ResNetTrunk": (("conv1", "bn1"),),
}
_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def _fused(conv: nn.Module, bn: nn.Module) -> nn.Module | None:
    if not isinstance(conv, _CONVS) or not isinstance(bn, nn.BatchNorm2d) or bn.training or conv.training:
        return None
    if bn.running_mean is None or bn.running_var is None:
        return None
    return fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """Fold BN into the preceding conv in place (model must be in eval mode)."""
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                fused = _fused(module._modules[a], module._modules[b])
                if fused is not None:
                    module._modules[a], module._modules[b] = fused, nn.Identity()
                    folded += 1
        for conv_name, bn_name in _PAIRS.get(type(module).__name__, ()):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            fused = _fused(conv, bn) if conv is not None and bn is not None else None
            if fused is not None:
                setattr(module, conv_name, fused)
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded


def _static_twin(conv: nn.Conv2d) -> nn.Conv2d | None:
    """A plain Conv2d doing the same "same"-padded stride-1 convolution, or None if not exact."""
    kh, kw = conv.kernel_size
    if tuple(conv.stride) != (1, 1) or kh % 2 == 0 or kw % 2 == 0 or tuple(conv.padding) != (0, 0):
        return None
    dh, dw = conv.dilation
    twin = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, 1, ((kh - 1) * dh // 2, (kw - 1) * dw // 2),
                     conv.dilation, conv.groups, conv.bias is not None)
    twin.weight = conv.weight
    twin.bias = conv.bias
    return twin.train(conv.training)


def static_same_padding(model: nn.Module) -> int:
    """Replace EfficientNet's dynamically padded stride-1 convs by statically padded ones, in place."""
    changed = 0
    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            if type(child).__name__ == "Conv2dDynamicSamePadding":
                twin = _static_twin(child)
                if twin is not None:
                    module._modules[name] = twin
                    changed += 1
    return changed
