"""How an Engine runs its model: backend, precision, memory layout, compilation.

``choose(device, ...)`` turns the requested options (``"auto"`` / ``None`` = the measured best for
the device, see docs/PERFORMANCE.md) into a ``FastPath``; ``build_runner`` turns a model and a
``FastPath`` into a callable ``normalised batch (B,3,S,S) → (maps (B,S,S), scores (B,))``, both
float32 on the batch's device.

Measured on a 2-core AVX-512 CPU (bench/perf_matrix.py): ONNX Runtime on the exported fp32 graph
beats every torch configuration and gives the same maps (≤ 1e-5), so it is the CPU default when
onnxruntime is installed; otherwise torch with folded batch norms and channels-last. On CUDA the
default is torch + bf16 autocast + channels-last (not measured here: no GPU was available).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import structlog
import torch

from inspector.model.nets.fuse import fold_batchnorm, static_same_padding
from inspector.model.nets.model import DiscrepancyModel
from inspector.engine.backends.onnx_cache import OnnxCache

Backend = Literal["torch", "onnx"]
Precision = Literal["fp32", "bf16"]
Runner = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
BACKENDS = ("auto", "torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class FastPath:
    """One concrete way of running the model (all fields decided, nothing "auto")."""

    backend: Backend = "torch"
    precision: Precision = "fp32"
    channels_last: bool = False
    fuse: bool = True  # fold batch norms, static padding (exact rewrites; torch backend only)
    compile: bool = False  # torch.compile (inductor), one graph per batch size

    def describe(self) -> str:
        if self.backend == "onnx":
            return "onnx-fp32"
        parts = ["torch", self.precision] + (["cl"] if self.channels_last else []) + \
            (["fused"] if self.fuse else []) + (["compiled"] if self.compile else [])
        return "-".join(parts)


def onnx_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "onnxscript"))


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def choose(device: torch.device, backend: str = "auto", precision: str = "auto", channels_last: bool | None = None,
           compile: bool | None = None) -> FastPath:
    """Resolve requested options against the device; explicit choices win, impossible ones raise."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    cuda = device.type == "cuda"
    if backend == "onnx" and (cuda or precision == "bf16" or compile):
        raise ValueError("the onnx backend runs fp32 on the CPU only (no compile)")
    if precision == "bf16" and not bf16_supported(device):
        raise ValueError(f"bf16 requested but {device} does not support it")
    if backend == "auto":
        explicit_torch = precision == "bf16" or bool(compile)
        backend = "onnx" if (not cuda and not explicit_torch and onnx_available()) else "torch"
    if backend == "onnx":
        return FastPath(backend="onnx", precision="fp32", channels_last=False, fuse=False, compile=False)
    if precision == "auto":
        precision = "bf16" if cuda and bf16_supported(device) else "fp32"
    return FastPath(backend="torch", precision=precision,  # type: ignore[arg-type]
                    channels_last=True if channels_last is None else channels_last,
                    fuse=True, compile=bool(compile))


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_torch(model: DiscrepancyModel, fast: FastPath) -> DiscrepancyModel:
    """Apply the exact rewrites and the memory layout in place (the model is the engine's own)."""
    model.eval()
    if fast.fuse:
        static_same_padding(model)
        fold_batchnorm(model)
    if fast.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def bucket(n: int) -> int:
    """Batch size a compiled model runs ``n`` images at: the next power of two."""
    return 1 << max(0, n - 1).bit_length()


def buckets(max_batch: int) -> list[int]:
    """Every bucket a micro-batcher limited to ``max_batch`` can produce."""
    return sorted({bucket(n) for n in range(1, max_batch + 1)})


def torch_runner(model: DiscrepancyModel, device: torch.device, fast: FastPath) -> Runner:
    model = prepare_torch(model, fast)
    fn: Callable = model.maps_and_scores
    if fast.compile:
        # freezing folds weights into the graph and pre-packs them for oneDNN on a CPU;
        # one graph per batch size (dynamic=False): warm each batch size up before serving
        fn = torch.compile(fn, dynamic=False, options={"freezing": True} if device.type == "cpu" else None)

    @torch.inference_mode()
    def run(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = batch.shape[0]
        if fast.compile and bucket(n) != n:  # pad to the bucket's size: one graph per bucket
            batch = torch.cat([batch, batch.new_zeros((bucket(n) - n, *batch.shape[1:]))])
        if fast.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with _autocast(device, fast.precision):
            maps, scores = fn(batch)
        return maps[:n].float().contiguous(), scores[:n].float()

    return run


def build_runner(model: DiscrepancyModel, device: torch.device, fast: FastPath, image_size: int | tuple[int, int],
                 onnx_cache: tuple[OnnxCache, str] | None = None) -> tuple[Runner, FastPath]:
    """A runner for ``fast``. ``onnx_cache`` (cache, key): where an exported graph is kept between
    loads of the same checkpoint (see ``inspector.engine.backends.onnx_cache``)."""
    if fast.backend == "onnx":
        from inspector.engine.backends.onnx import onnx_runner

        cache, key = onnx_cache or (None, None)
        return onnx_runner(model, image_size, cache=cache, key=key), fast
    return torch_runner(model, device, fast), fast


def fallback(fast: FastPath) -> FastPath:
    """What ``auto`` uses when the ONNX backend cannot be built."""
    return replace(fast, backend="torch", channels_last=True, fuse=True)


def log_choice(fast: FastPath, device: torch.device, requested: dict) -> None:
    structlog.get_logger("inspector.engine.backends.fastpath").info("fast_path", device=str(device), chosen=fast.describe(), **requested)
