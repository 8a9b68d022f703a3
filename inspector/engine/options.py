"""How a loaded model is asked to run and what its inspections carry: ``EngineOptions``.

The serving path builds them from Settings in one place (``Settings.engine_options()``); tools
and tests build them directly. The defaults are the measured best for the device. Loading
torch is not needed to build options (``Settings`` imports this module). ``ExecutionPlan`` is the
decided counterpart of a request (``backends.plan.resolve_plan`` makes one from options).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

#: Tiles per engine call by default (``INSPECTOR_MAX_TILES_PER_CALL``).
MAX_TILES_PER_CALL = 64

Backend = Literal["torch", "onnx", "openvino"]
Precision = Literal["fp32", "bf16"]
BACKENDS = ("auto", "torch", "onnx", "openvino")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class ExecutionPlan:
    """One concrete way of running the model (all fields decided, nothing "auto")."""

    backend: Backend = "torch"
    precision: Precision = "fp32"
    channels_last: bool = False
    fuse: bool = True  # fold batch norms, static padding (exact rewrites; torch backend only)
    compile: bool = False  # torch.compile (inductor), one graph per batch size

    @property
    def numerics(self) -> str:
        """The key of the scores this plan gives, for its calibrated threshold: every fp32 plan
        gives the same scores (within 1e-5), so they share ``"fp32"``; a reduced precision is
        numerically its own (``"openvino-bf16"``, ``"torch-bf16"``)."""
        return "fp32" if self.precision == "fp32" else f"{self.backend}-{self.precision}"

    def describe(self) -> str:
        if self.backend in ("onnx", "openvino"):
            return f"{self.backend}-{self.precision}"
        parts = ["torch", self.precision] + (["cl"] if self.channels_last else []) + \
            (["fused"] if self.fuse else []) + (["compiled"] if self.compile else [])
        return "-".join(parts)


@dataclass(frozen=True)
class EngineOptions:
    """What a caller may ask of an engine. ``backend``/``precision`` ``"auto"`` and
    ``channels_last`` ``None`` leave the choice to the engine (``backends.select``); ``plan`` sets
    the whole execution plan at once (benchmarks, tests) and is never swapped for a fallback."""

    backend: Literal["auto", "torch", "onnx", "openvino"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool | None = None
    compile: bool = False
    plan: ExecutionPlan | None = None
    onnx_cache_dir: Path | None = None  # exported graphs kept between loads (None: export at every load)
    max_tiles: int = MAX_TILES_PER_CALL  # tiled models: most tiles in one model call
    mask_size: int = 64  # cells of an inspection's mask (tiled: on the frame's longer side)
    min_region_area: int = 1  # smallest region reported, in original pixels
