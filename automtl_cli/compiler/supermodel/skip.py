"""The skip branch of one search node, for all tasks at once.

Layout: the input is `[N, T*C, H, W]` (see `compiler/supermodel/__init__.py`); a reference skip's
T 1×1 convolutions run as one grouped convolution and its T BatchNorms as one `batch_norm`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from automtl_cli.compiler.space import SkipPlan
from automtl_cli.compiler.strategies.skip import SkipKind
from automtl_cli.compiler.supermodel.stacking import TaskStacked

__all__ = ["SkipBranch"]


class SkipBranch(TaskStacked):
    """The skip option of one search node, for all tasks: identity, 1×1 conv + BN, or free."""

    BN_EPS, BN_MOMENTUM = 1e-5, 0.1  # nn.BatchNorm2d's defaults, as the reference's skip uses

    def __init__(self, plan: SkipPlan, tasks: Sequence[str]) -> None:
        super().__init__(tasks)
        self.plan = plan
        t, cin, cout = len(tasks), plan.in_channels, plan.out_channels
        self.kind = plan.kind
        self.stride = plan.stride
        if plan.kind is SkipKind.CONV:
            weight = torch.empty(t, cout, cin, 1, 1)
            for i in range(t):
                nn.init.kaiming_uniform_(weight[i], a=5 ** 0.5)  # nn.Conv2d's default
            self.weight = nn.Parameter(weight)
            self.bn_weight = nn.Parameter(torch.ones(t, cout))
            self.bn_bias = nn.Parameter(torch.zeros(t, cout))
            self.register_buffer("running_mean", torch.zeros(t, cout))
            self.register_buffer("running_var", torch.ones(t, cout))
            self._stacked = {"weight": "{task}.0.weight", "bn_weight": "{task}.1.weight",
                             "bn_bias": "{task}.1.bias", "running_mean": "{task}.1.running_mean",
                             "running_var": "{task}.1.running_var"}

    # ------------------------------------------------------------------ one task's weights

    def task_layers(self, t: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
        """Task t's 1×1 convolution and BatchNorm (a `conv` skip) as plain modules, copied."""
        if self.kind is not SkipKind.CONV:
            raise ValueError(f"a {self.kind!r} skip has no layers")
        plan = self.plan
        like = {"device": self.weight.device, "dtype": self.weight.dtype}
        # skip_init: no draw from the global generator for weights that are overwritten anyway
        conv = nn.utils.skip_init(nn.Conv2d, plan.in_channels, plan.out_channels, 1,
                                  plan.stride, bias=False, **like)
        bn = nn.BatchNorm2d(plan.out_channels, self.BN_EPS, self.BN_MOMENTUM, **like)
        with torch.no_grad():
            conv.weight.copy_(self.weight[t])
            bn.weight.copy_(self.bn_weight[t])
            bn.bias.copy_(self.bn_bias[t])
            bn.running_mean.copy_(self.running_mean[t])
            bn.running_var.copy_(self.running_var[t])
        return conv, bn

    def for_task(self, t: int | None) -> SkipBranch:
        """Task t's branch alone, as a one-task SkipBranch (None: a parameter-free skip that
        every task shares)."""
        if t is None:
            if self.kind is SkipKind.CONV:
                raise ValueError("a conv skip belongs to one task")
            return SkipBranch(self.plan, ("all",))
        one = SkipBranch(self.plan, (self.tasks[t],))
        if self.kind is SkipKind.CONV:
            with torch.no_grad():
                for attr in self._stacked:
                    getattr(one, attr).copy_(getattr(self, attr)[t:t + 1])
        return one

    # ------------------------------------------------------------------ forward passes

    def _spatial(self, x: torch.Tensor, subsample: bool) -> torch.Tensor:
        pads = self.plan.pads(x.shape[-2], x.shape[-1])
        if pads is not None:
            x = F.pad(x, pads)
        if subsample and self.stride != (1, 1):
            x = x[:, :, ::self.stride[0], ::self.stride[1]]
        return x

    def _channels(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Zero-pad or truncate channels, task by task (the cheap skip)."""
        n, c = x.shape[0], x.shape[1] // t
        cout = self.plan.out_channels
        x = x.reshape(n, t, c, *x.shape[2:])
        x = x[:, :, :cout] if cout < c else F.pad(x, (0, 0, 0, 0, 0, cout - c))
        return x.reshape(n, t * cout, *x.shape[3:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = len(self.tasks)
        if self.kind is SkipKind.CONV:
            x = self._spatial(x, subsample=False)
            cout = self.plan.out_channels
            weight = self.weight.reshape(t * cout, -1, 1, 1)
            y = F.conv2d(x, weight, None, self.stride, 0, 1, t).contiguous()
            return F.batch_norm(y, self.running_mean.view(-1), self.running_var.view(-1),
                                self.bn_weight.reshape(-1), self.bn_bias.reshape(-1),
                                self.training, self.BN_MOMENTUM, self.BN_EPS)
        x = self._spatial(x, subsample=True)
        return self._channels(x, t) if self.kind is SkipKind.FREE else x

    def forward_task(self, x: torch.Tensor, t: int) -> torch.Tensor:
        if self.kind is SkipKind.CONV:
            x = self._spatial(x, subsample=False)
            y = F.conv2d(x, self.weight[t], None, self.stride)
            return F.batch_norm(y, self.running_mean[t], self.running_var[t],
                                self.bn_weight[t], self.bn_bias[t], self.training,
                                self.BN_MOMENTUM, self.BN_EPS)
        x = self._spatial(x, subsample=True)
        return self._channels(x, 1) if self.kind is SkipKind.FREE else x
