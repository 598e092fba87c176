"""Running under `torchrun`: process group, model wrapping (DDP or FSDP2), and small collectives.

Without torchrun (no RANK in the environment) everything here degrades to a single process, so
the training loop has one code path. The model file knows nothing of this: wrapping is applied
from outside, as torchtitan does.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce(self, value: float | int, op: str = "sum") -> float:
        """The sum (or max) of a Python number over all ranks."""
        if not self.enabled:
            return float(value)
        t = torch.tensor(float(value), dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return float(t)

    def all_gather_object(self, value: Any) -> list[Any]:
        """Every rank's `value` (any picklable object), in rank order."""
        if not self.enabled:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed() -> Distributed:
    """Join the process group torchrun set up (gloo on CPU, NCCL on GPUs), if any."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Distributed(device=_default_device(0))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = _default_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu":
        # Ranks on one CPU share its cores: give each its part, or they oversubscribe.
        torch.set_num_threads(
            max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
        )
    return Distributed(rank, world_size, device)


def gather_dicts(*mine: dict) -> tuple[dict, ...]:
    """Each of `mine` (dicts keyed by row) merged with every other rank's: what a task scored of
    its share of the held-out rows, made whole for the metrics. Tasks hold no `Distributed`, so
    this reads the process group itself; without one it returns `mine`."""
    if not dist.is_initialized():
        return mine
    shares: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(shares, mine)
    return tuple(
        {key: value for share in shares for key, value in share[i].items()}
        for i in range(len(mine))
    )


def _default_device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def wrap_model(model: nn.Module, ctx: Distributed, strategy: str) -> nn.Module:
    """DDP replicates the model on every rank (for models that fit); FSDP2 shards parameters,
    gradients and optimizer state across ranks (for models that do not)."""
    if not ctx.enabled or strategy == "none":
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.layers:  # shard block by block, then the rest
            fully_shard(block)
        fully_shard(model)
        return model
    raise ValueError(f"parallel strategy {strategy!r}: choose ddp, fsdp or none")


def unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


def shutdown(ctx: Distributed) -> None:
    """Leave the process group. After a clean run the ranks leave together: one that tears its
    gloo connections down while a peer is still finishing its last collective can abort that
    peer (seen once in CI: "terminate called without an active exception" after a
    `stop_after` save). A rank that is failing does not wait for peers that may never come."""
    if ctx.enabled and dist.is_initialized():
        if sys.exc_info()[0] is None:
            dist.barrier()
        dist.destroy_process_group()
