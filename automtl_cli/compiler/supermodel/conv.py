"""The searchable convolution: shared op, task copies and skip of one search node, all tasks.

π₀·(W∗x) + π₁·(W_t∗x) equals (π₀W + π₁W_t)∗x, so for every task the two convolution branches
run as ONE convolution over the `[N, T*C, H, W]` activations, with mixed weights.

Speed (measured in `scripts/bench.py`, issue 18):

* the mixture is one autograd function (`mix_weights`) whose forward is two passes over the
  task weights and whose backward computes only the gradients asked for, each in one pass (a
  GEMV for the shared weight and the π gradients), instead of autograd's broadcast products and
  reductions through T×K temporaries;
* how the T task convolutions run is chosen per layer at build time, from its shape
  (`conv_mode`): one grouped convolution, T plain ones, the grouped one in channels-last, or
  (under bf16 autocast) the grouped one with its weight gradient as a batched GEMM.
  The choice is a fixed function of the shape, never a timing, so two runs compute the same.
* under a one-hot stage without gradients (hard inference in training mode, of per-task
  inputs or of a sampled policy; otherwise `Supermodel.forward` runs the derived network) the
  mixture is skipped: a node
  where every task chose the shared op runs one plain convolution over the `[N*T, C, H, W]`
  view, one where every task chose its own runs the task weights as they are.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from automtl_cli.compiler.space import SearchSpace, skip_plan
from automtl_cli.compiler.strategies.stage import StageStrategy
from automtl_cli.compiler.supermodel.gemm_conv import task_conv_gemm
from automtl_cli.compiler.supermodel.skip import SkipBranch
from automtl_cli.compiler.supermodel.stacking import TaskStacked
from automtl_cli.frontend.ir import Node

__all__ = ["SearchConv", "conv_mode", "mix_weights", "mix_weights_split"]


class _MixWeights(torch.autograd.Function):
    """mix_t = a_t·W + b_t·W_t over [T, K] weights, with a backward of single passes."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, shared: torch.Tensor,
                task: torch.Tensor) -> torch.Tensor:
        t = task.shape[0]
        view = (t,) + (1,) * (task.dim() - 1)
        out = torch.mul(task, b.view(view))
        out.addcmul_(a.view(view), shared.unsqueeze(0))
        ctx.save_for_backward(a, b, shared, task)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, b, shared, task = ctx.saved_tensors
        t = task.shape[0]
        g = grad.reshape(t, -1)
        ga = gb = gs = gt = None
        need_a, need_b, need_s, need_t = ctx.needs_input_grad
        if need_a:
            ga = torch.mv(g, shared.reshape(-1))
        if need_b:
            tasks = task.reshape(t, -1)
            gb = torch.stack([torch.dot(g[i], tasks[i]) for i in range(t)])
        if need_s:
            gs = torch.mv(g.t(), a).view(shared.shape)
        if need_t:
            bv = b.view((t,) + (1,) * (task.dim() - 1))
            # In place where the incoming gradient is a plain buffer of its own (the
            # convolution's weight gradient): one pass and no new allocation.
            gt = grad.mul_(bv) if grad.is_contiguous() and grad.requires_grad is False \
                and not torch.is_grad_enabled() else torch.mul(grad, bv)
        return ga, gb, gs, gt


def outs_shape(conv: nn.Conv2d, h: int, w: int) -> tuple[int, int]:
    """The output height and width of `conv` over an h×w input."""
    return tuple((size + 2 * p - d * (k - 1) - 1) // st + 1 for size, k, st, p, d in zip(
        (h, w), conv.kernel_size, conv.stride, conv.padding, conv.dilation))


class _MixWeightsSplit(torch.autograd.Function):
    """The same mixture as T separate tensors, for layers that run T plain convolutions: their
    T weight gradients arrive apart and are written once into the task weights' gradient, where
    unbinding one mixed tensor would first stack them (a pass over T×K)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, shared: torch.Tensor,
                task: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.save_for_backward(a, b, shared, task)
        return tuple(torch.mul(task[i], b[i]).addcmul_(shared, a[i])
                     for i in range(task.shape[0]))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        a, b, shared, task = ctx.saved_tensors
        need_a, need_b, need_s, need_t = ctx.needs_input_grad
        flat = shared.reshape(-1)
        gas, gbs = [], []
        gs = gt = None
        if need_t:
            gt = torch.empty_like(task)
        # Task by task, every use of one task's gradient together: it is still in the cache
        # for the second, third and fourth pass (a 512-channel layer's three gradients
        # together are larger than this CPU's L3, one of them is not).
        for i, g in enumerate(grads):
            if g is None:
                g = torch.zeros_like(shared)
            if need_a:
                gas.append(torch.dot(g.reshape(-1), flat))
            if need_b:
                gbs.append(torch.dot(g.reshape(-1), task[i].reshape(-1)))
            if need_s:
                gs = torch.mul(g, a[i]) if gs is None else gs.addcmul_(g, a[i])
            if need_t:
                torch.mul(g, b[i], out=gt[i])
        ga = torch.stack(gas) if need_a else None
        gb = torch.stack(gbs) if need_b else None
        return ga, gb, gs, gt


def mix_weights_split(a: torch.Tensor, b: torch.Tensor, shared: torch.Tensor,
                      task: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`mix_weights` as a tuple of T tensors (see `_MixWeightsSplit`)."""
    return _MixWeightsSplit.apply(a.to(task.dtype), b.to(task.dtype), shared, task)


def mix_weights(a: torch.Tensor, b: torch.Tensor, shared: torch.Tensor, task: torch.Tensor
                ) -> torch.Tensor:
    """`a[t]·shared + b[t]·task[t]` for every t: `a`, `b` are [T], `task` is [T, *shared.shape].
    Under autocast the mixture is made in the weights' own (float32) precision."""
    return _MixWeights.apply(a.to(task.dtype), b.to(task.dtype), shared, task)


# Layers measured (scripts/bench.py --layers, this repository's ResNet-34 specs at 64²): in
# float32, T plain convolutions beat the grouped one from 256 input channels per task at small
# spatial sizes (9×9: 0.85–0.93× the time at 1 thread, about even at 2). Under bf16 autocast
# those layers' weight gradient is faster as one batched GEMM (`gemm_conv.py`: 0.77–0.84× the
# time of the grouped convolution at 2 threads, 0.78–0.90× the separate ones' at 1, forward
# and backward), while oneDNN keeps the smaller layers. Channels-last wins for a first layer
# with few input channels (7×7 over 3 channels: 0.4–0.65×) and for a strided 1×1 (0.35–0.6×:
# in NCHW it falls to the slow reference kernel); elsewhere the grouped one is as fast or
# faster.
def conv_mode(in_channels: int, groups: int, kernel: tuple[int, int], hw: tuple[int, int],
              device_type: str, stride: tuple[int, int] = (1, 1), autocast: bool = False
              ) -> str:
    """How a layer's T task convolutions run, in float32 or under (bfloat16) `autocast`:
    "grouped", "separate", "channels_last" or "gemm"."""
    if device_type != "cpu":
        return "grouped"  # not measured off CPU yet: scripts/gpu_check.sh measures it
    # A strided 1×1 in channels-last corrupted the heap in training (docs/performance.md)
    strided_1x1 = kernel == (1, 1) and stride != (1, 1)
    if groups == 1 and in_channels <= 4 and not strided_1x1:
        return "channels_last"
    if groups == 1 and in_channels >= 256 and hw[0] * hw[1] <= 256:
        return "gemm" if autocast else "separate"
    return "grouped"


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
        self._mode_args = (in_shape[1], a["group"], tuple(a["kernel"]), tuple(in_shape[2:]))
        self._stride = tuple(a["stride"])
        self._choose_modes(self.shared.weight.device.type)  # a default device may be set

    def _choose_modes(self, device_type: str) -> None:
        """How the task convolutions run in float32 (`mode`) and under autocast
        (`mode_autocast`) on this device."""
        args = (*self._mode_args, device_type, self._stride)
        self.mode = conv_mode(*args)
        self.mode_autocast = conv_mode(*args, autocast=True)

    def _active_mode(self, x: torch.Tensor) -> str:
        """`mode_autocast` inside an autocast region of x's device, else `mode`."""
        return self.mode_autocast if torch.is_autocast_enabled(x.device.type) else self.mode

    def _apply(self, fn, recurse=True):
        """Moving the module re-chooses how its convolutions run (see `conv_mode`)."""
        out = super()._apply(fn, recurse)
        self._choose_modes(self.shared.weight.device.type)
        return out

    # Set by Supermodel.forward for a `sampled_only` stage: which branches any task sampled here.
    sampled: tuple[bool, bool] = (True, True)  # (a convolution branch, the skip branch)
    # Set by Supermodel.forward under a one-hot stage without gradients: each task's branch.
    choices: tuple[int, ...] = ()

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

    def _convolve(self, x: torch.Tensor, weight: torch.Tensor | tuple[torch.Tensor, ...],
                  bias: torch.Tensor | None, mode: str) -> torch.Tensor:
        """The T task convolutions, `weight` [T, Cout, Cin/g, kh, kw] (or, in `separate` mode,
        T tensors), the way `mode` says."""
        conv, t = self.shared, len(self.tasks)
        if mode == "gemm":
            return task_conv_gemm(x, weight.reshape(-1, *weight.shape[2:]), bias, conv.stride,
                                  conv.padding, conv.dilation, t)
        if mode == "separate":
            n, _, h, w = x.shape
            xs = x.view(n, t, -1, h, w).unbind(1)
            bs = bias.view(t, -1).unbind(0) if bias is not None else (None,) * t
            return torch.cat([F.conv2d(xi, wi, bi, conv.stride, conv.padding, conv.dilation,
                                       self.groups) for xi, wi, bi in zip(xs, weight, bs)], 1)
        weight = weight.reshape(-1, *weight.shape[2:])
        if mode == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
            weight = weight.contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, self.groups * t)
        return y.contiguous()

    def _plain(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
               ) -> torch.Tensor:
        """One task's (or a stacked batch's) convolution, in channels-last where the layer's
        mode is."""
        conv = self.shared
        if self._active_mode(x) == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
            weight = weight.contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, self.groups)
        return y.contiguous()

    def forward(self, x: torch.Tensor, pi: torch.Tensor, stage: StageStrategy) -> torch.Tensor:
        if stage.one_hot and not torch.is_grad_enabled():
            return self._forward_chosen(x)
        t = len(self.tasks)
        # [T] each; one unbind (one backward node) rather than three selects
        p_shared, p_task, p_skip = pi[self.index].unbind(1)
        conv_needed, skip_needed = self.sampled if stage.sampled_only else (True, True)
        y = None
        if conv_needed:
            conv = self.shared
            mode = self._active_mode(x)
            mix = mix_weights_split if mode == "separate" else mix_weights
            weight = mix(p_shared, p_task, conv.weight, self.task_weight)
            bias = None
            if conv.bias is not None:
                bias = (p_shared[:, None] * conv.bias + p_task[:, None] * self.task_bias
                        ).reshape(-1)
            y = self._convolve(x, weight, bias, mode)
        if not skip_needed:
            return y
        s = self.skip(x)
        n, _, h, w = s.shape
        # in the branches' dtype: a float32 π would promote bf16 activations to float32
        p2 = p_skip.view(1, t, 1, 1, 1).to(s.dtype if y is None else y.dtype)
        s = s.view(n, t, -1, h, w)
        out = p2 * s if y is None else torch.addcmul(y.view(n, t, -1, h, w), p2, s)
        return out.view(n, -1, h, w)

    def _forward_chosen(self, x: torch.Tensor) -> torch.Tensor:
        """One-hot π without gradients (`choices`, set by Supermodel.forward): each task runs
        its chosen branch only, no mixture. The tasks that chose the shared op run as one
        plain convolution over their stacked batch; all tasks choosing their own copies run
        as the grouped convolution of the task weights."""
        t, conv = len(self.tasks), self.shared
        n, _, h, w = x.shape
        choices = self.choices
        if all(c == 0 for c in choices):
            y = self._plain(x.reshape(n * t, -1, h, w), conv.weight, conv.bias)
            return y.reshape(n, -1, *y.shape[2:])
        if all(c == 1 for c in choices):
            bias = self.task_bias.reshape(-1) if self.task_bias is not None else None
            return self._convolve(x, self.task_weight, bias, self._active_mode(x))
        xs = x.view(n, t, -1, h, w)
        outs: list[torch.Tensor | None] = [None] * t
        shared = [i for i, c in enumerate(choices) if c == 0]
        if shared:
            k = len(shared)
            # one gather, task-major, so that the reshape is a view (indexing [:, shared]
            # and then transposing copied twice)
            stacked = xs.transpose(0, 1)[shared].reshape(k * n, -1, h, w)
            ys = self._plain(stacked, conv.weight, conv.bias).view(k, n, -1,
                                                                   *outs_shape(conv, h, w))
            for j, i in enumerate(shared):
                outs[i] = ys[j]
        for i, c in enumerate(choices):
            if c == 1:
                bias = self.task_bias[i] if self.task_bias is not None else None
                outs[i] = self._plain(xs[:, i], self.task_weight[i], bias)
            elif c == 2:
                outs[i] = self.skip.forward_task(xs[:, i], i)
        y = torch.stack(outs, 1)
        return y.view(n, -1, *y.shape[3:])

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
