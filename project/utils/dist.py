"""torch.distributed as torchrun sets it up: who am I, and helpers that are no-ops alone.

`python project/train.py` is one process (world size 1, nothing initialised);
`torchrun --nproc_per_node=N project/train.py` sets RANK/WORLD_SIZE/LOCAL_RANK and the
rendezvous address, and we only call `init_process_group` (NCCL on CUDA, gloo on CPU).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> DistEnv:
    """torchrun's variables; a plain `python` run gets the single-process default."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistEnv(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world) if world > 1 else DistEnv()


def init(env: DistEnv, device: torch.device) -> None:
    if env.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=env.rank,
                                world_size=env.world_size)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast(obj: Any, env: DistEnv) -> Any:
    """Rank 0's value of a small picklable object, on every rank."""
    box = [obj]
    if env.enabled:
        dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def gather_strings(value: str, env: DistEnv) -> list[str]:
    """Every rank's `value`, in rank order (a one-item list when not distributed)."""
    values: list = [value] * env.world_size
    if env.enabled:
        dist.all_gather_object(values, value)
    return values
