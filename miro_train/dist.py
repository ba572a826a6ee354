"""Distributed setup: `torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK; NCCL on GPUs, gloo on CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from miro_data.common import MiroError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise MiroError("--device cuda: no CUDA device is visible")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def setup(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def mean(value: torch.Tensor, info: DistInfo) -> float:
    """The mean of a scalar over all ranks (a collective: every rank must call it)."""
    if info.world > 1:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= info.world
    return float(value)


def gather(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj`, in rank order (a collective)."""
    if info.world == 1:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()
