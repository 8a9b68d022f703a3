"""Which backend runs a model: the one place that decides, builds, and falls back.

The rule: a plan the engine chose itself (``backend="auto"``, no explicit ``plan``) on an
exported graph (OpenVINO, ONNX Runtime) that cannot be built (export, compile, or its check
against torch fails) runs as the plan ``auto`` picks without that backend: OpenVINO bf16 → ONNX
Runtime fp32 → torch, each step logged. Anything asked for explicitly fails instead (the rollout
refuses the model; a benchmark measures what it named).
"""

from __future__ import annotations

import structlog
import torch

from inspector.engine.backends.onnx_cache import OnnxCache
from inspector.engine.backends.plan import ExecutionPlan, Runner, resolve_plan
from inspector.engine.backends.torch_runner import torch_runner
from inspector.engine.options import EngineOptions
from inspector.model.nets.model import DiscrepancyModel


def select_runner(model: DiscrepancyModel, device: torch.device, options: EngineOptions,
                  input_hw: tuple[int, int], onnx_cache: tuple[OnnxCache, str] | None = None
                  ) -> tuple[Runner, ExecutionPlan]:
    """A runner for ``model`` on ``device`` as ``options`` ask, and the plan it runs; logs the
    choice once (``execution_plan``). ``onnx_cache`` (cache, key): where an exported graph is
    kept between loads of the same checkpoint. Raises ``ValueError`` for an impossible request
    and ``RuntimeError`` for a plan that cannot be built (after the fallback rule)."""
    log = structlog.get_logger("inspector.engine.backends.select")
    plan = options.plan or resolve_plan(device, options)
    fell_back, failed = None, []
    while True:
        try:
            runner = _build(model, device, plan, input_hw, onnx_cache)
            break
        except RuntimeError as exc:
            if plan.backend == "torch" or options.plan is not None or options.backend != "auto":
                raise
            log.warning(f"{plan.backend}_backend_unavailable", error=str(exc)[:300])
            fell_back = fell_back or plan.describe()
            failed.append(plan.backend)
            plan = resolve_plan(device, options, without=failed)
    log.info("execution_plan", device=str(device), plan=plan.describe(), backend=options.backend,
             precision=options.precision, explicit_plan=options.plan is not None, fell_back_from=fell_back)
    return runner, plan


def _build(model: DiscrepancyModel, device: torch.device, plan: ExecutionPlan, input_hw: tuple[int, int],
           onnx_cache: tuple[OnnxCache, str] | None = None) -> Runner:
    cache, key = onnx_cache or (None, None)
    if plan.backend == "onnx":
        from inspector.engine.backends.onnx import onnx_runner  # onnx/onnxruntime only when used

        return onnx_runner(model, input_hw, cache=cache, key=key)
    if plan.backend == "openvino":
        from inspector.engine.backends.openvino import openvino_runner  # openvino only when used

        return openvino_runner(model, input_hw, plan.precision, cache=cache, key=key)
    return torch_runner(model, device, plan)
