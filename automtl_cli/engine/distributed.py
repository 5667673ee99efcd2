"""Data parallelism on torch's own engine, for runs launched by `torchrun`.

`torchrun --nproc-per-node N --no-python automtl search|finetune|eval ...` sets RANK, WORLD_SIZE
and LOCAL_RANK; `init_distributed` then joins the process group (gloo on CPU, nccl on GPU, one
device per local rank). Everything else asks the returned `Dist`: rank 0 alone writes files, a
stop signal on any rank stops every rank at the same step, gradients and metric sums are
reduced exactly. A single process gets a `Dist` whose collectives are no-ops.
"""

from __future__ import annotations

import gc
import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Dist", "init_distributed", "restarted_by_torchrun", "shutdown_distributed"]


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
        backend = "nccl" if gpu else "gloo"
        restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        if restart and os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true":
            # After a restart the agent's store still holds the dead workers' addresses; a
            # fresh prefix per attempt keeps a new worker from dialling one of them.
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                                  world, is_master=False, timeout=timedelta(minutes=30))
            dist.init_process_group(backend, store=dist.PrefixStore(
                f"automtl/attempt-{restart}", store), rank=rank, world_size=world)
        else:
            dist.init_process_group(backend)
    if gpu:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return Dist(rank, world, local), device


def shutdown_distributed(clean: bool = True) -> None:
    """Leave the process group, if one was joined, while the interpreter is whole.

    A group destroyed during interpreter finalisation aborts the process ("terminate called
    without an active exception"). What holds it (DDP's reducer) often sits in reference
    cycles, hence the collection first. After a failure NCCL's teardown can wait on dead peers,
    so it is left to the process's exit; gloo's is local and always safe.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if not clean and dist.get_backend() != "gloo":
        return
    gc.collect()
    dist.destroy_process_group()
    gc.collect()


def digest(tensors: list[torch.Tensor]) -> str:
    """A short fingerprint of tensors' exact values (to show ranks hold the same ones)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class GlobalBatchNorm(torch.nn.BatchNorm2d):
    """BatchNorm over the global batch of all ranks, on any device.

    torch's SyncBatchNorm runs on GPUs only; this one sums each channel's values and squares
    across ranks with an autograd-aware all-reduce, so gloo (CPU) runs get it too.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        count = torch.full((1,), x.numel() // c, dtype=x.dtype, device=x.device)
        local = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count])
        total = all_reduce(local)
        n = total[-1]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_((var * n / (n - 1).clamp_min(1)).detach(), m)
                self.num_batches_tracked += 1
        shape = (1, c, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.weight is not None:
            y = y * self.weight.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y


def convert_sync_batchnorm(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Every BatchNorm2d to a global-batch one: torch's SyncBatchNorm on GPU, ours on CPU."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is torch.nn.BatchNorm2d:
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return module
