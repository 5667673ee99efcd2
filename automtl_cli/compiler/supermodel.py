"""The multi-task supermodel: every task in one forward pass.

Layout. Activations of all T tasks travel as one tensor `[N, T*C, H, W]`, which is the same
memory as `[N, T, C, H, W]` and as `[N*T, C, H, W]`. So

* a shared layer (pooling, ReLU, Eltwise, InnerProduct, ...) runs once over the `[N*T, C, H, W]`
  view, a plain dense kernel over the stacked batch;
* a searchable convolution runs its shared op and its T task copies as ONE grouped convolution on
  the `[N, T*C, H, W]` view: convolution is linear in its weights, so π₀·(W∗x) + π₁·(W_t∗x) equals
  (π₀W + π₁W_t)∗x, and the mixture costs one convolution instead of two;
* a per-task BatchNorm is one `batch_norm` call over T*C channels (each task keeps its own
  statistics, exactly as the reference's one-task-at-a-time passes do).

The forward is generated with torch.fx: `Supermodel.graph_module.code` is straight-line code with
one call per prototxt layer. `Supermodel.forward_reference` runs the reference's way instead, one
task at a time with every branch computed separately; tests and the benchmark compare the two.

Branch weights π ([S, T, 3] for S search nodes: shared, specific, skip) come from the stage:
`warmup` (all 1/3: the reference's pre-train average), `soft` (Gumbel-softmax of the logits at
temperature τ, with noise given or drawn), `hard` (one-hot, from a policy or the logits' argmax).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from automtl_cli.compiler.backbone import module_name
from automtl_cli.compiler.space import (
    SearchSpace,
    SkipPlan,
    bn_has_task_copies,
    follows_searchable,
    skip_plan,
)
from automtl_cli.frontend.ir import Graph, Node
from automtl_cli.frontend.ops import LAYER_KINDS

__all__ = ["GDAS", "HARD", "SOFT", "STAGES", "WARMUP", "Supermodel", "build_supermodel",
           "gdas_weights", "gumbel_noise"]

WARMUP, SOFT, HARD, GDAS = 0, 1, 2, 3
STAGES = {"warmup": WARMUP, "soft": SOFT, "hard": HARD, "gdas": GDAS}
BRANCHES = ("shared", "specific", "skip")


# --------------------------------------------------------------------------- per-task state keys

class TaskStacked(nn.Module):
    """A module holding some tensors stacked over tasks (first dim T), saved under per-task keys.

    Stacking is what lets one kernel serve all tasks; per-task keys (`task.depth.weight`) are what
    a user reads in a checkpoint. `_stacked` maps an attribute to its key template.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self._stacked: dict[str, str] = {}
        self.register_state_dict_post_hook(_split_stacked)
        self.register_load_state_dict_pre_hook(_join_stacked)


def _split_stacked(module: TaskStacked, state: dict, prefix: str, local_metadata) -> None:
    for attr, template in module._stacked.items():
        tensor = state.pop(prefix + attr, None)
        if tensor is None:
            continue
        for t, task in enumerate(module.tasks):
            state[prefix + template.format(task=task)] = tensor[t]


def _join_stacked(module: TaskStacked, state: dict, prefix: str, local_metadata, strict,
                  missing_keys, unexpected_keys, error_msgs) -> None:
    for attr, template in module._stacked.items():
        keys = [prefix + template.format(task=task) for task in module.tasks]
        present = [k for k in keys if k in state]
        if not present:
            continue
        if len(present) != len(keys):
            missing_keys.extend(k for k in keys if k not in state)
            for k in present:
                state.pop(k)
            continue
        state[prefix + attr] = torch.stack([state.pop(k) for k in keys])


# --------------------------------------------------------------------------- modules

class SkipBranch(TaskStacked):
    """The skip option of one search node, for all tasks: identity, 1×1 conv + BN, or free."""

    def __init__(self, plan: SkipPlan, tasks: Sequence[str]) -> None:
        super().__init__(tasks)
        self.plan = plan
        t, cin, cout = len(tasks), plan.in_channels, plan.out_channels
        self.kind = plan.kind
        self.stride = plan.stride
        if plan.kind == "conv":
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
        if self.kind == "conv":
            x = self._spatial(x, subsample=False)
            cout = self.plan.out_channels
            y = F.conv2d(x, self.weight.reshape(t * cout, -1, 1, 1), None, self.stride, 0, 1, t)
            return F.batch_norm(y, self.running_mean.view(-1), self.running_var.view(-1),
                                self.bn_weight.reshape(-1), self.bn_bias.reshape(-1),
                                self.training, 0.1, 1e-5)
        x = self._spatial(x, subsample=True)
        return self._channels(x, t) if self.kind == "free" else x

    def forward_task(self, x: torch.Tensor, t: int) -> torch.Tensor:
        if self.kind == "conv":
            x = self._spatial(x, subsample=False)
            y = F.conv2d(x, self.weight[t], None, self.stride)
            return F.batch_norm(y, self.running_mean[t], self.running_var[t],
                                self.bn_weight[t], self.bn_bias[t], self.training, 0.1, 1e-5)
        x = self._spatial(x, subsample=True)
        return self._channels(x, 1) if self.kind == "free" else x


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

    # Set by Supermodel.forward for the `gdas` stage: which branches any task sampled here.
    sampled: tuple[bool, bool] = (True, True)  # (a convolution branch, the skip branch)

    def forward(self, x: torch.Tensor, pi: torch.Tensor, stage: int) -> torch.Tensor:
        t = len(self.tasks)
        p = pi[self.index]  # [T, 3]
        conv_needed, skip_needed = self.sampled if stage == GDAS else (True, True)
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

    def forward_task(self, x: torch.Tensor, t: int, pi: torch.Tensor, stage: int
                     ) -> torch.Tensor:
        """The reference's node: all three branches computed, then mixed."""
        p = pi[self.index, t]
        conv = self.shared
        shared = conv(x)
        bias = self.task_bias[t] if self.task_bias is not None else None
        specific = F.conv2d(x, self.task_weight[t], bias, conv.stride, conv.padding,
                            conv.dilation, self.groups)
        return p[0] * shared + p[1] * specific + p[2] * self.skip.forward_task(x, t)


class SearchBatchNorm(TaskStacked):
    """BatchNorm under `--bn task|follow|shared`; statistics are always per task.

    For task t the output is a_t·BN_shared(x) + (1 − a_t)·BN_t(x): a = ½ in the `task` mode's
    warm-up and 0 after it; a = π_shared of the convolution it follows in `follow` mode; a = 1 in
    `shared` mode (and in `follow` mode for a BN that follows no search node). With batch
    statistics both terms normalise x identically, so the blend is one `batch_norm` call with
    blended γ/β.
    """

    def __init__(self, node: Node, space: SearchSpace, follows: int | None) -> None:
        super().__init__(space.tasks)
        a = node.attrs
        c = node.shapes[0][1]
        t = len(space.tasks)
        self.layer, self.mode, self.follows = node.name, space.bn, follows
        self.eps, self.momentum = a["eps"], a["momentum"]
        self.shared = nn.BatchNorm2d(c, a["eps"], a["momentum"], a["affine"])
        if a["affine"] and not a["bias"]:
            self.shared.register_parameter("bias", None)
        self.has_task = bn_has_task_copies(space, follows)
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

    def blend(self, pi: torch.Tensor, stage: int) -> torch.Tensor | float:
        """a per task ([T] tensor), or a float for all tasks."""
        if not self.has_task:
            return 1.0
        if self.mode == "task":
            return 0.5 if stage == WARMUP else 0.0
        return pi[self.follows, :, 0]

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

    def _stats_update(self, x: torch.Tensor, a, t: int, task: int | None) -> None:
        """Running statistics: the task's own, and the shared BN's wherever it is used."""
        c = self.shared.num_features
        with torch.no_grad():
            xs = x.transpose(0, 1).reshape(x.shape[1], -1)
            var, mean = torch.var_mean(xs, dim=1, correction=1)  # unbiased, as BatchNorm keeps
            mean, var = mean.view(-1, c), var.view(-1, c)
            m = self.momentum
            if self.has_task and not (isinstance(a, float) and a == 1.0):
                rows = slice(None) if task is None else slice(task, task + 1)
                self.task_mean[rows].lerp_(mean, m)
                self.task_var[rows].lerp_(var, m)
            if not (isinstance(a, float) and a == 0.0):
                # As if the tasks' batches had passed one after the other, as in the reference.
                k = mean.shape[0]
                decay = (1 - m) ** torch.arange(k - 1, -1, -1, device=x.device, dtype=x.dtype)
                w = (m * decay).unsqueeze(1)
                keep = (1 - m) ** k
                self.shared.running_mean.mul_(keep).add_((w * mean).sum(0))
                self.shared.running_var.mul_(keep).add_((w * var).sum(0))

    def _normalise(self, x: torch.Tensor, a, t: int, task: int | None) -> torch.Tensor:
        if self.training:
            weight, bias = self._affine(a, t, task)
            y = F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
            self._stats_update(x, a, t, task)
            return y
        # Evaluation: the two terms use different running statistics.
        rows = slice(None) if task is None else slice(task, task + 1)
        k = 1 if task is not None else t
        shared = F.batch_norm(x, self.shared.running_mean.repeat(k),
                              self.shared.running_var.repeat(k), *self._affine(1.0, k),
                              False, 0.0, self.eps)
        if not self.has_task or (isinstance(a, float) and a == 1.0):
            return shared
        tw = self.task_weight[rows].reshape(-1) if self.task_weight is not None else None
        tb = self.task_bias[rows].reshape(-1) if self.task_bias is not None else None
        own = F.batch_norm(x, self.task_mean[rows].reshape(-1), self.task_var[rows].reshape(-1),
                           tw, tb, False, 0.0, self.eps)
        if isinstance(a, float):
            return own if a == 0.0 else a * shared + (1 - a) * own
        n, _, *rest = x.shape
        av = a[rows].view(1, k, 1, *([1] * len(rest)))
        y = av * shared.view(n, k, -1, *rest) + (1 - av) * own.view(n, k, -1, *rest)
        return y.view(x.shape)

    def forward(self, x: torch.Tensor, pi: torch.Tensor, stage: int) -> torch.Tensor:
        return self._normalise(x, self.blend(pi, stage), len(self.tasks), None)

    def forward_task(self, x: torch.Tensor, t: int, pi: torch.Tensor, stage: int
                     ) -> torch.Tensor:
        return self._normalise(x, self.blend(pi, stage), 1, t)


class Folded(nn.Module):
    """A shared layer run once over the stacked batch: `[N, T*C, ...]` viewed as `[N*T, C, ...]`."""

    def __init__(self, op: nn.Module, tasks: int) -> None:
        super().__init__()
        self.op, self.tasks = op, tasks

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        t = self.tasks
        n = xs[0].shape[0]
        y = self.op(*(x.reshape(n * t, x.shape[1] // t, *x.shape[2:]) for x in xs))
        return y.reshape(n, t * y.shape[1], *y.shape[2:])

    def forward_task(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.op(*xs)


class Elementwise(nn.Module):
    """A shared layer that acts on each value alone: it needs no reshaping at all."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.op(*xs)

    def forward_task(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.op(*xs)


# --------------------------------------------------------------------------- the supermodel

def gumbel_noise(shape: Sequence[int], seed: int, step: int) -> torch.Tensor:
    """Gumbel(0, 1) noise drawn from (seed, step) alone: resumed and distributed runs agree."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2 ** 63))
    u = torch.rand(tuple(shape), generator=g, dtype=torch.float64)
    return -torch.log(-torch.log(u.clamp_(1e-20, 1.0))).float()


def gdas_weights(soft: torch.Tensor) -> torch.Tensor:
    """One-hot branch weights whose gradient reaches only the sampled branch's probability."""
    hard = F.one_hot(soft.argmax(-1), 3).to(soft.dtype)
    return hard + hard * (soft - soft.detach())  # exactly one-hot in value


class Supermodel(nn.Module):
    """Backbone search space for T tasks. `forward` returns features as `[N, T, C, H, W]`."""

    def __init__(self, graph: Graph, space: SearchSpace) -> None:
        super().__init__()
        self.graph, self.space = graph, space
        self.tasks = space.tasks
        t = len(space.tasks)
        shapes = graph.value_shapes()
        follows = follows_searchable(graph)
        index_of: dict[str, int] = {}
        layers = nn.Module()
        fx_graph = fx.Graph()
        x_in = fx_graph.placeholder("x")
        pi = fx_graph.placeholder("pi")
        stage = fx_graph.placeholder("stage")
        if len(graph.inputs) != 1:
            raise ValueError("a supermodel needs a backbone with exactly one input")
        env = {next(iter(graph.inputs)): x_in}
        self.node_modules: list[tuple[Node, str]] = []
        used: set[str] = set()
        for node in graph.nodes:
            in_shapes = [shapes[v] for v in node.inputs]
            name = module_name(node.name)
            while name in used:
                name += "_"
            used.add(name)
            args: tuple
            if node.searchable:
                index_of[node.name] = len(index_of)
                module = SearchConv(node, in_shapes[0], index_of[node.name], space)
                args = (env[node.inputs[0]], pi, stage)
            elif node.type == "BatchNorm":
                src = follows.get(node.name)
                module = SearchBatchNorm(node, space, index_of[src] if src else None)
                args = (env[node.inputs[0]], pi, stage)
            else:
                kind = LAYER_KINDS[node.type]
                op = kind.build(node.attrs, in_shapes)
                conflict = kind.task_stacking_conflict(node.attrs, in_shapes)
                if conflict:
                    raise ValueError(f"layer {node.name!r}: {conflict}")
                module = Elementwise(op) if kind.elementwise else Folded(op, t)
                args = tuple(env[v] for v in node.inputs)
            layers.add_module(name, module)
            self.node_modules.append((node, name))
            env[node.outputs[0]] = fx_graph.call_module(name, args)
        fx_graph.output(env[graph.output])
        self.graph_module = fx.GraphModule(layers, fx_graph,
                                           class_name=f"Supermodel_{module_name(graph.name)}")
        self.search_names = [name for node, name in self.node_modules if node.searchable]
        # a plain list (not registered twice): the hot path reads it every step
        self._search_modules = [self.graph_module.get_submodule(n) for n in self.search_names]
        self.register_state_dict_post_hook(_flatten_graph_prefix)
        self.register_load_state_dict_pre_hook(_add_graph_prefix)

    # ------------------------------------------------------------------ branch weights

    @property
    def search_nodes(self) -> list[SearchConv]:
        return self._search_modules

    def logits(self) -> torch.Tensor:
        """All policy logits as one `[S, T, 3]` tensor (a view-free stack of S small tensors)."""
        return torch.stack([m.policy for m in self.search_nodes])

    def branch_weights(self, stage: str, *, tau: float = 1.0, noise: torch.Tensor | None = None,
                       policy: torch.Tensor | None = None, generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        s, t = len(self.search_names), len(self.tasks)
        device = self.search_nodes[0].policy.device if s else torch.device("cpu")
        if stage == "warmup":
            return torch.full((s, t, 3), 1.0 / 3.0, device=device)
        if stage == "soft":
            logits = self.logits()
            if noise is None:
                u = torch.rand(logits.shape, generator=generator, device=logits.device)
                noise = -torch.log(-torch.log(u.clamp(1e-20, 1.0)))
            return torch.softmax((logits + noise.to(logits.device)) / tau, dim=-1)
        if stage == "gdas":
            # Dong & Yang (2019): the sampled branch alone runs; its weight is 1 in the forward
            # pass and carries the softmax's gradient back to the logits.
            logits = self.logits()
            if noise is None:
                u = torch.rand(logits.shape, generator=generator, device=logits.device)
                noise = -torch.log(-torch.log(u.clamp(1e-20, 1.0)))
            return gdas_weights(torch.softmax((logits + noise.to(logits.device)) / tau, dim=-1))
        if stage == "hard":
            if policy is None:
                policy = self.logits().detach().argmax(-1)  # ties go to shared (index 0)
            policy = policy.to(device)
            if policy.dim() == 2:
                policy = F.one_hot(policy.long(), 3)
            if tuple(policy.shape) != (s, t, 3):
                raise ValueError(f"a policy must be [{s}, {t}] choices or [{s}, {t}, 3] one-hot, "
                                 f"got {list(policy.shape)}")
            return policy.float()
        raise ValueError(f"stage {stage!r} is not one of {', '.join(STAGES)}")

    # ------------------------------------------------------------------ forward passes

    def stack_input(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, C, H, W]` (one batch for every task) or `[T, N, C, H, W]` → `[N, T*C, H, W]`."""
        t = len(self.tasks)
        if x.dim() == 4:
            n, c = x.shape[:2]
            return x.unsqueeze(1).expand(n, t, *x.shape[1:]).reshape(n, t * c, *x.shape[2:])
        if x.dim() == 5 and x.shape[0] == t:
            return x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])
        raise ValueError(f"input must be [N, C, H, W] or [{t}, N, C, H, W], got {list(x.shape)}")

    def forward(self, x: torch.Tensor, stage: str = "soft", *, tau: float = 1.0,
                noise: torch.Tensor | None = None, policy: torch.Tensor | None = None,
                pi: torch.Tensor | None = None) -> torch.Tensor:
        if pi is None:
            pi = self.branch_weights(stage, tau=tau, noise=noise, policy=policy)
        if stage == "gdas":  # one host copy per step decides which branches run at all
            chosen = pi.detach().argmax(-1).cpu()
            for i, node in enumerate(self.search_nodes):
                row = chosen[i]
                node.sampled = (bool((row < 2).any()), bool((row == 2).any()))
        y = self.graph_module(self.stack_input(x), pi, STAGES[stage])
        n = y.shape[0]
        return y.view(n, len(self.tasks), -1, *y.shape[2:])

    def forward_reference(self, x: torch.Tensor, stage: str = "soft", *, tau: float = 1.0,
                          noise: torch.Tensor | None = None, policy: torch.Tensor | None = None,
                          pi: torch.Tensor | None = None, only: int | None = None
                          ) -> list[torch.Tensor]:
        """The reference's execution: one task at a time, every branch computed.

        `x` is one batch for all tasks or `[T, N, C, H, W]`; `only` runs a single task.
        """
        if pi is None:
            pi = self.branch_weights(stage, tau=tau, noise=noise, policy=policy)
        code = STAGES[stage]
        outs = []
        start = next(iter(self.graph.inputs))
        for t in range(len(self.tasks)) if only is None else (only,):
            env = {start: x[t] if x.dim() == 5 else x}
            for node, name in self.node_modules:
                module = self.graph_module.get_submodule(name)
                ins = [env[v] for v in node.inputs]
                if isinstance(module, (SearchConv, SearchBatchNorm)):
                    env[node.outputs[0]] = module.forward_task(ins[0], t, pi, code)
                else:
                    env[node.outputs[0]] = module.forward_task(*ins)
            outs.append(env[self.graph.output])
        return outs


def _flatten_graph_prefix(module: Supermodel, state: dict, prefix: str, local_metadata) -> None:
    """Keys read `conv3.shared.weight`, not `graph_module.conv3.shared.weight`."""
    inner = prefix + "graph_module."
    for key in [k for k in state if k.startswith(inner)]:
        state[prefix + key[len(inner):]] = state.pop(key)


def _add_graph_prefix(module: Supermodel, state: dict, prefix: str, local_metadata, strict,
                      missing_keys, unexpected_keys, error_msgs) -> None:
    for key in [k for k in state if k.startswith(prefix)
                and not k.startswith(prefix + "graph_module.")]:
        state[prefix + "graph_module." + key[len(prefix):]] = state.pop(key)


def build_supermodel(graph: Graph, space: SearchSpace, *, seed: int = 0,
                     device: torch.device | str | None = None) -> Supermodel:
    """Materialise the supermodel's weights from `seed` alone (the same seed, the same weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Supermodel(graph, space)
    return model.to(device) if device is not None else model


def extract_backbone_state(model: Supermodel, task: int) -> dict[str, Any]:
    """Weights of the plain backbone as task `task` sees it under the all-shared policy."""
    state = {}
    for _node, name in model.node_modules:
        module = model.graph_module.get_submodule(name)
        if isinstance(module, SearchConv):
            for k, v in module.shared.state_dict().items():
                state[f"{name}.{k}"] = v
        elif isinstance(module, SearchBatchNorm):
            own = module.has_task and module.mode == "task"
            sd = module.shared.state_dict()
            if own:
                if module.task_weight is not None:
                    sd["weight"] = module.task_weight[task]
                if module.task_bias is not None:
                    sd["bias"] = module.task_bias[task]
                sd["running_mean"] = module.task_mean[task]
                sd["running_var"] = module.task_var[task]
            for k, v in sd.items():
                state[f"{name}.{k}"] = v
        else:
            for k, v in module.op.state_dict().items():
                state[f"{name}.{k}"] = v
    return state
