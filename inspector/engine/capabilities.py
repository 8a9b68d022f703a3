"""What this machine can run: the device ``auto`` means, bf16 on a device, ONNX Runtime."""

from __future__ import annotations

import importlib.util

import torch


def pick_device(device: str | None = None) -> torch.device:
    """``None``, ``""`` or ``"auto"``: the GPU when there is one, else the CPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def onnx_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "onnxscript"))


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
