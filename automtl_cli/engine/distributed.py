"""Data parallelism on torch's own engine, for runs launched by `torchrun`.

`torchrun --nproc-per-node N --no-python automtl search|finetune|eval ...` sets RANK, WORLD_SIZE
and LOCAL_RANK; `init_distributed` then joins the process group (gloo on CPU, nccl on GPU, one
device per local rank). Everything else asks the returned `Dist`: rank 0 alone writes files, a
stop signal on any rank stops every rank at the same step, gradients and metric sums are
reduced exactly. A single process gets a `Dist` whose collectives are no-ops.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Dist", "init_distributed", "restarted_by_torchrun"]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
        return tensor

    def average_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Mean of each gradient over ranks, in one flat all-reduce."""
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if it is true on any (one collective)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def restarted_by_torchrun() -> bool:
    """torchrun's elastic agent restarts all workers after a failure; they should resume."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def init_distributed(device: str) -> tuple[Dist, str]:
    """Join the process group if launched by torchrun; returns the rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return Dist(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    gpu = device.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if gpu else "gloo")
    if gpu:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return Dist(rank, world, local), device


def digest(tensors: list[torch.Tensor]) -> str:
    """A short fingerprint of tensors' exact values (to show ranks hold the same ones)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
