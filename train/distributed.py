"""The processes of a torchrun job: joining the group, stopping every rank on one input error, DDP wrapping, and the
global loss denominators that make W ranks x b images take the step of one process with W*b."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from co2s.errors import Co2SError, Co2SInputError

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this call created the process group, so it also destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: str | None = None) -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: join the group (env://; NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    owns = world > 1 and not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if use_cuda else "gloo", init_method="env://")
    return Dist(dist.get_rank() if world > 1 else 0, world, dev, owns)


def close_distributed(d: Dist) -> None:
    if d.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def stop_together(d: Dist, work: Callable[[], T]) -> T | None:
    """Run `work` on every rank; if it raises Co2SInputError on rank 0 (any Co2SError), every rank raises that message (nobody hangs
    in a collective). Every rank must call this. In one process the error simply propagates."""
    error, result = None, None
    try:
        result = work()
    except Co2SError as e:
        if not d.enabled:
            raise
        error = str(e)
    if d.enabled:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error:
        raise Co2SInputError(error)
    return result


def wrap(module: nn.Module, d: Dist) -> nn.Module:
    """DistributedDataParallel in a multi-process job, the module itself otherwise."""
    if not d.enabled:
        return module
    return nn.parallel.DistributedDataParallel(module, device_ids=[d.device.index] if d.device.type == "cuda" else None)


def count_reducer(d: Dist) -> Callable[[torch.Tensor], torch.Tensor]:
    """Loss denominators summed over ranks / world size: DDP averages gradients over ranks, so this makes the
    average the loss of the global batch (identity in one process)."""

    def reduce_counts(counts: torch.Tensor) -> torch.Tensor:
        if not d.enabled:
            return counts
        counts = counts.clone()
        dist.all_reduce(counts)
        return counts / d.world

    return reduce_counts
