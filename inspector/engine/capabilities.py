"""What this machine can run: the device ``auto`` means, bf16 on a device, ONNX Runtime, OpenVINO."""

from __future__ import annotations

import functools
import importlib.util

import torch


def pick_device(device: str | None = None) -> torch.device:
    """``None``, ``""`` or ``"auto"``: the GPU when there is one, else the CPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def onnx_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "onnxscript"))


def openvino_available() -> bool:
    """OpenVINO and the exporter that makes its graph (the ONNX export)."""
    return importlib.util.find_spec("openvino") is not None and all(
        importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript"))


@functools.cache
def openvino_cpu_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 natively here (AVX512-BF16 or AMX): its own
    report of the CPU (``OPTIMIZATION_CAPABILITIES``), read once per process."""
    if not openvino_available():
        return False
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # noqa: BLE001 - a plugin that cannot start is a CPU without it
        return False


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
