"""Data-parallel training with torchrun: every rank draws its own batches, rank 0 publishes.

Ranks must step together (DDP all-reduces gradients), but each draws from Redis on its
own, so before every step the ranks agree that all of them hold a batch; a rank whose
buffers are short makes everyone wait, and the ranks that hold a batch keep it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    #: a gloo group for the readiness flag, so agreeing on it never waits for the GPU
    _flags: Any = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> DistributedContext | None:
        """The torchrun environment, or None for a plain single-process trainer."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self) -> torch.device:
        """Join the process group; returns this rank's device (its GPU, or the CPU with gloo)."""
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            torch.distributed.init_process_group("nccl")
            self._flags = torch.distributed.new_group(backend="gloo")
            return torch.device("cuda", self.local_rank)
        torch.distributed.init_process_group("gloo")
        return torch.device("cpu")

    def all_ready(self, ready: bool, device: torch.device) -> bool:
        """True only when every rank holds a batch (one tiny all-reduce per step, on the CPU
        when a gloo group exists: an NCCL flag read back would wait for the GPU every step)."""
        flag = torch.tensor([1 if ready else 0], device="cpu" if self._flags is not None else device,
                            dtype=torch.int32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN, group=self._flags)
        return bool(flag.item())

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)

    def close(self) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
