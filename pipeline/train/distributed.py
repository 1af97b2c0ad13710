"""Data-parallel training with torchrun: every rank draws its own batches, rank 0 publishes.

Ranks must step together (DDP all-reduces gradients), but each draws from Redis on its
own, so before every step the ranks agree that all of them hold a batch; a rank whose
buffers are short makes everyone wait, and the ranks that hold a batch keep it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
import torch

log = structlog.get_logger(__name__)
#: how long a closing rank waits for the others at the closing barrier
CLOSE_BARRIER_S = 30.0


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
        """Leave the group together: a rank that tears its group down while another still
        finishes its last collective can abort that one in gloo's teardown ("terminate called
        without an active exception", seen once under a loaded test suite), so every rank first
        meets at a barrier; a rank that is gone (crashed, killed) only costs `CLOSE_BARRIER_S`."""
        if not torch.distributed.is_initialized():
            return
        try:
            torch.distributed.monitored_barrier(group=self._flags, timeout=timedelta(seconds=CLOSE_BARRIER_S))
        except RuntimeError as exc:  # a peer that left first: nobody to wait for
            log.warning("distributed_close_alone", rank=self.rank, error=str(exc)[:200])
        torch.distributed.destroy_process_group()
