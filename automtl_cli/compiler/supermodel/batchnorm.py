"""BatchNorm in the supermodel: a shared BN and, where the `--bn` strategy asks, one per task.

Statistics are always per task: the `[N, T*C, H, W]` activations go through one `batch_norm`
call over T*C channels. What `--bn` decides (task copies or not, how the shared γ/β are blended
in) is asked of the strategy (`compiler/strategies/bn/`).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from automtl_cli.compiler.space import SearchSpace
from automtl_cli.compiler.strategies.stage import StageStrategy
from automtl_cli.compiler.supermodel.stacking import TaskStacked
from automtl_cli.frontend.ir import Node

__all__ = ["SearchBatchNorm"]


class SearchBatchNorm(TaskStacked):
    """BatchNorm under a `--bn` strategy; statistics are always per task.

    For task t the output is a_t·BN_shared(x) + (1 − a_t)·BN_t(x), a from the strategy's
    `blend` (1 for a BN without task copies). With batch statistics both terms normalise x
    identically, so the blend is one `batch_norm` call with blended γ/β.
    """

    def __init__(self, node: Node, space: SearchSpace, follows: int | None) -> None:
        super().__init__(space.tasks)
        a = node.attrs
        c = node.shapes[0][1]
        t = len(space.tasks)
        self.layer, self.bn_strategy, self.follows = node.name, space.bn_strategy, follows
        self.eps, self.momentum = a["eps"], a["momentum"]
        self.shared = nn.BatchNorm2d(c, a["eps"], a["momentum"], a["affine"])
        if a["affine"] and not a["bias"]:
            self.shared.register_parameter("bias", None)
        self.has_task = self.bn_strategy.has_task_copies(follows is not None)
        stacked: dict[str, str] = {}
        if self.has_task:
            if self.shared.weight is not None:
                self.task_weight = nn.Parameter(torch.ones(t, c))
                stacked["task_weight"] = "task.{task}.weight"
            else:
                self.task_weight = None
            if self.shared.bias is not None:
                self.task_bias = nn.Parameter(torch.zeros(t, c))
                stacked["task_bias"] = "task.{task}.bias"
            else:
                self.task_bias = None
            self.register_buffer("task_mean", torch.zeros(t, c))
            self.register_buffer("task_var", torch.ones(t, c))
            stacked.update(task_mean="task.{task}.running_mean", task_var="task.{task}.running_var")
        self._stacked = stacked

    # ------------------------------------------------------------------ one task's BN

    def shared_batchnorm(self) -> nn.BatchNorm2d:
        """The shared BN as a plain module (a copy)."""
        return copy.deepcopy(self.shared)

    def task_batchnorm(self, t: int) -> nn.BatchNorm2d:
        """Task t's own BN (γ/β and running statistics) as a plain module (a copy)."""
        if not self.has_task:
            raise ValueError(f"BatchNorm {self.layer!r} has no task copies under --bn "
                             f"{self.bn_strategy.name.value}")
        bn = copy.deepcopy(self.shared)
        with torch.no_grad():
            if bn.weight is not None:
                bn.weight.copy_(self.task_weight[t])
            if bn.bias is not None and self.task_bias is not None:
                bn.bias.copy_(self.task_bias[t])
            bn.running_mean.copy_(self.task_mean[t])
            bn.running_var.copy_(self.task_var[t])
        return bn

    def batchnorm_for(self, t: int, choice: int | None) -> nn.BatchNorm2d:
        """The BN task t uses when it took branch `choice` at the node this BN follows."""
        if self.has_task and self.bn_strategy.uses_task_copy(choice):
            return self.task_batchnorm(t)
        return self.shared_batchnorm()

    # ------------------------------------------------------------------ forward passes

    def blend(self, pi: torch.Tensor, stage: StageStrategy) -> torch.Tensor | float:
        """a per task ([T] tensor), or a float for all tasks."""
        if not self.has_task:
            return 1.0
        return self.bn_strategy.blend(pi, stage, self.follows)

    def _affine(self, a, t: int, task: int | None = None):
        """Blended γ and β, flattened to T*C (or C for one task)."""
        sw, sb = self.shared.weight, self.shared.bias
        tw = self.task_weight if self.has_task else None
        tb = self.task_bias if self.has_task else None
        if task is not None:
            tw = tw[task:task + 1] if tw is not None else None
            tb = tb[task:task + 1] if tb is not None else None
            if isinstance(a, torch.Tensor):
                a = a[task:task + 1]
            t = 1

        def mix(shared, per_task):
            if shared is None:
                return None
            if isinstance(a, float):
                if a == 1.0 or per_task is None:
                    return shared.repeat(t)
                if a == 0.0:
                    return per_task.reshape(-1)
                return (a * shared + (1 - a) * per_task).reshape(-1)
            return (a[:, None] * shared + (1 - a[:, None]) * per_task).reshape(-1)

        return mix(sw, tw), mix(sb, tb)

    def _stats_update(self, mean: torch.Tensor, invstd: torch.Tensor, count: int, a,
                      task: int | None) -> None:
        """Running statistics: the task's own, and the shared BN's wherever it is used.

        The batch mean and 1/√(var + eps) are the ones the normalisation itself computed (no
        second pass over the activations); the running variance is the unbiased one, as
        BatchNorm keeps."""
        c = self.shared.num_features
        with torch.no_grad():
            dtype = self.shared.running_mean.dtype
            mean = mean.to(dtype).view(-1, c)
            var = (invstd.to(dtype).pow(-2) - self.eps).clamp_min_(0)
            var = var.mul_(count / max(count - 1, 1)).view(-1, c)
            m = self.momentum
            if self.has_task and not (isinstance(a, float) and a == 1.0):
                rows = slice(None) if task is None else slice(task, task + 1)
                self.task_mean[rows].lerp_(mean, m)
                self.task_var[rows].lerp_(var, m)
            if not (isinstance(a, float) and a == 0.0):
                # As if the tasks' batches had passed one after the other, as in the reference.
                k = mean.shape[0]
                w = self._decay(k, mean)
                keep = (1 - m) ** k
                self.shared.running_mean.mul_(keep).addmv_(mean.t(), w)
                self.shared.running_var.mul_(keep).addmv_(var.t(), w)

    def _decay(self, k: int, like: torch.Tensor) -> torch.Tensor:
        """m·(1−m)^(k−1−i), the weight of the i-th of k batches in the running statistics
        (made once per k, device and dtype: the step should not rebuild it)."""
        key = (k, like.device, like.dtype, self.momentum)
        cached = self.__dict__.get("_decay_cache")
        if cached is None or cached[0] != key:
            m = self.momentum
            w = m * (1 - m) ** torch.arange(k - 1, -1, -1, device=like.device, dtype=like.dtype)
            cached = (key, w)
            self.__dict__["_decay_cache"] = cached
        return cached[1]

    def _normalise(self, x: torch.Tensor, a, t: int, task: int | None) -> torch.Tensor:
        if self.training:
            weight, bias = self._affine(a, t, task)
            y, mean, invstd = torch.native_batch_norm(x, weight, bias, None, None, True, 0.0,
                                                      self.eps)
            self._stats_update(mean, invstd, x.numel() // x.shape[1], a, task)
            return y
        # Evaluation: one set of running statistics is one batch_norm call; a blend of the two
        # is a blend of two per-channel affine maps of x, itself one: x·scale + shift.
        rows = slice(None) if task is None else slice(task, task + 1)
        k = 1 if task is not None else t
        if not self.has_task or (isinstance(a, float) and a == 1.0):
            sh = self.shared
            return F.batch_norm(x, sh.running_mean.repeat(k), sh.running_var.repeat(k),
                                *self._affine(1.0, k), False, 0.0, self.eps)
        if isinstance(a, float) and a == 0.0:
            tw = self.task_weight[rows].reshape(-1) if self.task_weight is not None else None
            tb = self.task_bias[rows].reshape(-1) if self.task_bias is not None else None
            return F.batch_norm(x, self.task_mean[rows].reshape(-1),
                                self.task_var[rows].reshape(-1), tw, tb, False, 0.0, self.eps)
        scale, shift = self._eval_affine(a, k, rows)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return torch.addcmul(shift.to(x.dtype).view(shape), x, scale.to(x.dtype).view(shape))

    def _eval_affine(self, a, k: int, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Per channel ([k*C]) scale and shift of the blended BN under running statistics."""
        def affine(mean, var, weight, bias):
            scale = (var + self.eps).rsqrt()
            if weight is not None:
                scale = scale * weight
            shift = -mean * scale
            return scale, (shift + bias if bias is not None else shift)

        sh = self.shared
        s_scale, s_shift = affine(sh.running_mean, sh.running_var, sh.weight, sh.bias)
        s_scale, s_shift = s_scale.expand(k, -1), s_shift.expand(k, -1)
        if not self.has_task or (isinstance(a, float) and a == 1.0):
            return s_scale.reshape(-1), s_shift.reshape(-1)
        tw = self.task_weight[rows] if self.task_weight is not None else None
        tb = self.task_bias[rows] if self.task_bias is not None else None
        o_scale, o_shift = affine(self.task_mean[rows], self.task_var[rows], tw, tb)
        if isinstance(a, float):
            if a == 0.0:
                return o_scale.reshape(-1), o_shift.reshape(-1)
            av = torch.tensor(a, dtype=o_scale.dtype, device=o_scale.device)
        else:
            av = a[rows].to(o_scale.dtype).view(k, 1)
        scale = av * s_scale + (1 - av) * o_scale
        shift = av * s_shift + (1 - av) * o_shift
        return scale.reshape(-1), shift.reshape(-1)

    def forward(self, x: torch.Tensor, pi: torch.Tensor, stage: StageStrategy) -> torch.Tensor:
        return self._normalise(x, self.blend(pi, stage), len(self.tasks), None)

    def forward_task(self, x: torch.Tensor, t: int, pi: torch.Tensor, stage: StageStrategy
                     ) -> torch.Tensor:
        return self._normalise(x, self.blend(pi, stage), 1, t)
