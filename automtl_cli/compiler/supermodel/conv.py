"""The searchable convolution: shared op, task copies and skip of one search node, all tasks.

π₀·(W∗x) + π₁·(W_t∗x) equals (π₀W + π₁W_t)∗x, so for every task the two convolution branches
run as ONE grouped convolution over the `[N, T*C, H, W]` activations, with mixed weights.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from automtl_cli.compiler.space import SearchSpace, skip_plan
from automtl_cli.compiler.strategies.stage import StageStrategy
from automtl_cli.compiler.supermodel.skip import SkipBranch
from automtl_cli.compiler.supermodel.stacking import TaskStacked
from automtl_cli.frontend.ir import Node

__all__ = ["SearchConv"]


class SearchConv(TaskStacked):
    """A virtual compute node: shared op W, task copies W_t (starting equal to W), skips S_t."""

    def __init__(self, node: Node, in_shape: tuple[int, ...], index: int, space: SearchSpace
                 ) -> None:
        super().__init__(space.tasks)
        a = node.attrs
        t = len(space.tasks)
        self.index, self.depth, self.layer = index, node.depth, node.name
        self.shared = nn.Conv2d(in_shape[1], a["num_output"], tuple(a["kernel"]),
                                tuple(a["stride"]), tuple(a["pad"]), tuple(a["dilation"]),
                                a["group"], a["bias"])
        self.groups = a["group"]
        self.task_weight = nn.Parameter(self.shared.weight.detach().clone().expand(
            t, *self.shared.weight.shape).contiguous())
        stacked = {"task_weight": "task.{task}.weight", "policy": "policy.{task}"}
        if a["bias"]:
            self.task_bias = nn.Parameter(self.shared.bias.detach().clone().expand(
                t, a["num_output"]).contiguous())
            stacked["task_bias"] = "task.{task}.bias"
        else:
            self.task_bias = None
        self.policy = nn.Parameter(torch.zeros(t, 3))
        self._stacked = stacked
        self.skip = SkipBranch(skip_plan(node, in_shape, space.skip), space.tasks)

    # Set by Supermodel.forward for a `sampled_only` stage: which branches any task sampled here.
    sampled: tuple[bool, bool] = (True, True)  # (a convolution branch, the skip branch)

    # ------------------------------------------------------------------ one branch's weights

    def shared_conv(self) -> nn.Conv2d:
        """The shared branch as a plain convolution (a copy)."""
        return copy.deepcopy(self.shared)

    def task_conv(self, t: int) -> nn.Conv2d:
        """Task t's specific branch as a plain convolution (a copy)."""
        conv = copy.deepcopy(self.shared)
        with torch.no_grad():
            conv.weight.copy_(self.task_weight[t])
            if conv.bias is not None:
                conv.bias.copy_(self.task_bias[t])
        return conv

    # ------------------------------------------------------------------ forward passes

    def forward(self, x: torch.Tensor, pi: torch.Tensor, stage: StageStrategy) -> torch.Tensor:
        t = len(self.tasks)
        p = pi[self.index]  # [T, 3]
        conv_needed, skip_needed = self.sampled if stage.sampled_only else (True, True)
        y = None
        if conv_needed:
            conv = self.shared
            mix = p[:, 0].view(t, 1, 1, 1, 1) * conv.weight + p[:, 1].view(t, 1, 1, 1, 1) \
                * self.task_weight
            bias = None
            if conv.bias is not None:
                bias = (p[:, 0:1] * conv.bias + p[:, 1:2] * self.task_bias).reshape(-1)
            y = F.conv2d(x, mix.reshape(-1, *mix.shape[2:]), bias, conv.stride, conv.padding,
                         conv.dilation, self.groups * t)
        if not skip_needed:
            return y
        s = self.skip(x)
        n, _, h, w = s.shape
        s = p[:, 2].view(1, t, 1, 1, 1) * s.view(n, t, -1, h, w)
        return (s if y is None else y.view(n, t, -1, h, w) + s).view(n, -1, h, w)

    def forward_task(self, x: torch.Tensor, t: int, pi: torch.Tensor, stage: StageStrategy
                     ) -> torch.Tensor:
        """The reference's node: all three branches computed, then mixed."""
        p = pi[self.index, t]
        conv = self.shared
        shared = conv(x)
        bias = self.task_bias[t] if self.task_bias is not None else None
        specific = F.conv2d(x, self.task_weight[t], bias, conv.stride, conv.padding,
                            conv.dilation, self.groups)
        return p[0] * shared + p[1] * specific + p[2] * self.skip.forward_task(x, t)
