"""Multi-process data-parallel training under ``torchrun`` (one process per GPU).

``torchrun --nproc_per_node=N -m trainer.cli fit ...`` sets RANK, LOCAL_RANK and WORLD_SIZE in each
process's environment (torch.distributed's own contract); a plain ``trainer fit`` is one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from inspector.engine.capabilities import pick_device


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str | None) -> tuple[Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), pick_device(device)
    ctx = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available() and device != "cpu":
        torch.cuda.set_device(ctx.local_rank)
        dev, backend = torch.device("cuda", ctx.local_rank), "nccl"
    else:
        dev, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend)
    return ctx, dev


def wrap(student: torch.nn.Module, ctx: Dist, device: torch.device) -> torch.nn.Module:
    """The module to train: DDP (gradients averaged across processes) when distributed."""
    if not ctx.active:
        return student
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None)


def teardown(ctx: Dist) -> None:
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()
