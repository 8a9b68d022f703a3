"""What an execution plan is: one concrete way of running the model, every choice decided.

``ExecutionPlan`` names a run configuration (backend, precision, memory layout, exact rewrites,
compilation), never a request: ``"auto"`` lives in ``EngineOptions`` and is resolved against
the device by ``resolve_plan``. Compiled plans run batches padded to power-of-two buckets.

Measured on a 2-core AVX-512 CPU (bench/perf_matrix.py): ONNX Runtime on the exported fp32 graph
beats every torch configuration and gives the same maps (≤ 1e-5); OpenVINO bf16 on the same graph
is about 1.5× faster again where the CPU has native bf16 (AVX512-BF16, AMX), within 0.005 AUROC
of fp32 (bench/perf_parity.py). So the CPU default is OpenVINO bf16 where OpenVINO reports bf16,
else ONNX Runtime fp32, else torch with folded batch norms and channels-last. On CUDA the
default is torch + bf16 autocast + channels-last (not measured here: no GPU was available).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import torch

from inspector.engine.capabilities import bf16_supported, onnx_available, openvino_available, openvino_cpu_bf16
from inspector.engine.options import BACKENDS, PRECISIONS, EngineOptions, ExecutionPlan

__all__ = ["BACKENDS", "PRECISIONS", "ExecutionPlan", "Runner", "bucket", "buckets", "resolve_plan"]

#: normalised batch (B,3,H,W) → (maps (B,H,W), scores (B,)), both float32 on the batch's device
Runner = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def resolve_plan(device: torch.device, options: EngineOptions = EngineOptions(),
                 without: Collection[str] = ()) -> ExecutionPlan:
    """The plan ``options`` ask for on ``device``: explicit choices win, impossible ones raise
    ``ValueError``, ``auto`` takes the measured best of what is installed and not in ``without``
    (backends that already failed to build). On the CPU, ``auto`` is OpenVINO bf16 where OpenVINO
    reports native bf16 (unless fp32 was asked for), else ONNX Runtime fp32, else torch."""
    backend, precision, compile = options.backend, options.precision, options.compile
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    cuda = device.type == "cuda"
    if backend == "onnx" and (cuda or precision == "bf16" or compile):
        raise ValueError("the onnx backend runs fp32 on the CPU only (no compile)")
    if backend == "openvino" and (cuda or compile):
        raise ValueError("the openvino backend runs on the CPU only (no compile)")
    if backend == "openvino" and not openvino_available():
        raise ValueError("the openvino backend needs the openvino package")
    if backend == "openvino" and precision == "bf16" and not openvino_cpu_bf16():
        raise ValueError("bf16 requested but OpenVINO does not report native bf16 on this CPU")
    if precision == "bf16" and backend != "openvino" and not bf16_supported(device):
        raise ValueError(f"bf16 requested but {device} does not support it")
    if backend == "auto":
        backend = "torch"
        if not (cuda or compile):
            if precision != "fp32" and "openvino" not in without and openvino_available() and openvino_cpu_bf16():
                backend = "openvino"
            elif precision != "bf16" and "onnx" not in without and onnx_available():
                backend = "onnx"
    if backend == "onnx":
        return ExecutionPlan(backend="onnx", precision="fp32", channels_last=False, fuse=False, compile=False)
    if backend == "openvino":
        chosen = precision if precision != "auto" else ("bf16" if openvino_cpu_bf16() else "fp32")
        return ExecutionPlan(backend="openvino", precision=chosen,  # type: ignore[arg-type]
                             channels_last=False, fuse=False, compile=False)
    if precision == "auto":
        precision = "bf16" if cuda and bf16_supported(device) else "fp32"
    return ExecutionPlan(backend="torch", precision=precision,  # type: ignore[arg-type]
                         channels_last=True if options.channels_last is None else options.channels_last,
                         fuse=True, compile=bool(compile))


def bucket(n: int) -> int:
    """Batch size a compiled model runs ``n`` images at: the next power of two."""
    return 1 << max(0, n - 1).bit_length()


def buckets(max_batch: int) -> list[int]:
    """Every bucket a micro-batcher limited to ``max_batch`` can produce."""
    return sorted({bucket(n) for n in range(1, max_batch + 1)})
