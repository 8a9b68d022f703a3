"""The torch backend: the model itself, rewritten and laid out as its plan says, maybe compiled."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from inspector.engine.backends.plan import ExecutionPlan, Runner, bucket
from inspector.model.nets.fuse import fold_batchnorm, static_same_padding
from inspector.model.nets.model import DiscrepancyModel


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_torch(model: DiscrepancyModel, plan: ExecutionPlan) -> DiscrepancyModel:
    """Apply the exact rewrites and the memory layout in place (the model is the engine's own)."""
    model.eval()
    if plan.fuse:
        static_same_padding(model)
        fold_batchnorm(model)
    if plan.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def torch_runner(model: DiscrepancyModel, device: torch.device, plan: ExecutionPlan) -> Runner:
    model = prepare_torch(model, plan)
    fn: Callable = model.maps_and_scores
    if plan.compile:
        # freezing folds weights into the graph and pre-packs them for oneDNN on a CPU;
        # one graph per batch size (dynamic=False): warm each batch size up before serving
        fn = torch.compile(fn, dynamic=False, options={"freezing": True} if device.type == "cpu" else None)

    @torch.inference_mode()
    def run(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = batch.shape[0]
        if plan.compile and bucket(n) != n:  # pad to the bucket's size: one graph per bucket
            batch = torch.cat([batch, batch.new_zeros((bucket(n) - n, *batch.shape[1:]))])
        if plan.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with _autocast(device, plan.precision):
            maps, scores = fn(batch)
        return maps[:n].float().contiguous(), scores[:n].float()

    return run
