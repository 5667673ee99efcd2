"""The deployable graph: the derived network flattened into one fx graph, BatchNorm folded.

`trace_network` turns a `DerivedNetwork` (tree backbone + one head per task, returning a dict)
into ONE `fx.GraphModule` whose `forward(image)` returns a tuple of predictions in task order:
the backbone's generated tree is inlined as it is, so every shared prefix is still computed
once, and the heads are inlined beside it. On that graph two passes fold inference-time
BatchNorm away, so ONNX and TorchScript both get it (not only torch.onnx's optimiser):

* `fold_skip_branches` (run first): a skip branch's 1×1 convolution + BN (`SkipBranch`,
  functional calls on task-stacked tensors) becomes one 1×1 convolution with a bias.
* `fold_batchnorm`: a `BatchNorm2d` whose only input is a `Conv2d` call (or a folded skip),
  that call having no other user, becomes that convolution's weight and bias. A convolution
  read by several BatchNorms (under `--bn task` the tasks' paths part at a BN after a shared
  convolution) is left alone: folding it would compute the shared convolution once per task.
  A BN after a parameter-free skip (it reads a pooling or ReLU output) stays too.

Folding is w' = w·γ/√(σ²+ε), b' = (b − μ)·γ/√(σ²+ε) + β per output channel, in float64.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import fx, nn

from automtl_cli.compiler.space import SkipPlan
from automtl_cli.compiler.strategies.skip import SkipKind
from automtl_cli.compiler.supermodel import SkipBranch

__all__ = ["FoldedSkip", "TaskTuple", "fold_batchnorm", "fold_conv_bn", "fold_skip_branches",
           "trace_network"]

logger = logging.getLogger(__name__)


class TaskTuple(nn.Module):
    """A derived network whose `forward` returns a tuple in task order (tracers want tuples)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.backbone = network.backbone
        self.heads = network.heads
        self.task_names = tuple(network.task_names)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.backbone(image)
        return tuple(self.heads[name](f) for name, f in zip(self.task_names, features))


class _FlatTracer(fx.Tracer):
    """Inline every container (tree, heads, Sequential); keep modules without children whole."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, SkipBranch) or not any(True for _ in m.children())


def trace_network(network: nn.Module) -> fx.GraphModule:
    """One flat fx graph of the whole network, in eval mode; inputs `image`, outputs a tuple."""
    root = TaskTuple(network).eval()
    graph = _FlatTracer().trace(root)
    gm = fx.GraphModule(root, graph, class_name="ExportedNetwork")
    gm.task_names = root.task_names
    return gm.eval()


def _fold_into(weight: torch.Tensor, bias: torch.Tensor | None, mean: torch.Tensor,
               var: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None,
               eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of a convolution followed by an eval-mode BatchNorm, as one convolution."""
    scale = (var.double() + eps).rsqrt()
    if gamma is not None:
        scale = scale * gamma.double()
    shift = -mean.double() * scale
    if bias is not None:
        shift = shift + bias.double() * scale
    if beta is not None:
        shift = shift + beta.double()
    folded = weight.double() * scale.view(-1, *([1] * (weight.dim() - 1)))
    return folded.to(weight.dtype), shift.to(weight.dtype)


def fold_conv_bn(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    """A copy of `conv` (a Conv2d or a folded skip) that computes `bn(conv(x))` in eval mode."""
    fused = copy.deepcopy(conv)
    target = _conv_of(fused)
    with torch.no_grad():
        weight, bias = _fold_into(target.weight, target.bias, bn.running_mean, bn.running_var,
                                  bn.weight, bn.bias, bn.eps)
        target.weight = nn.Parameter(weight)
        target.bias = nn.Parameter(bias)
    return fused


def _conv_of(module: nn.Module) -> nn.Conv2d | None:
    """The convolution whose output `module` returns unchanged, if any."""
    if type(module) is nn.Conv2d:
        return module
    return module.conv if isinstance(module, FoldedSkip) else None


def _foldable(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
        return False
    bn = modules[node.target]
    src = node.args[0] if len(node.args) == 1 and not node.kwargs else None
    if not (isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1):
        return False
    conv = _conv_of(modules[src.target])
    return (conv is not None and not bn.training and bn.running_mean is not None
            and bn.num_features == conv.out_channels)


def fold_batchnorm(gm: fx.GraphModule) -> int:
    """Fold each BatchNorm2d that directly and solely follows a Conv2d; returns how many.

    Run `fold_skip_branches` first: a BN after a folded skip's convolution is folded too.
    """
    modules = dict(gm.named_modules())
    fused_names: dict[tuple[str, str], str] = {}
    count = 0
    for node in list(gm.graph.nodes):
        if not _foldable(node, modules):
            continue
        conv_node = node.args[0]
        key = (conv_node.target, node.target)
        name = fused_names.get(key)
        if name is None:
            parent, _, leaf = conv_node.target.rpartition(".")
            name = f"{parent + '.' if parent else ''}{leaf}__with__{node.target.rpartition('.')[2]}"
            gm.add_submodule(name, fold_conv_bn(modules[conv_node.target], modules[node.target]))
            fused_names[key] = name
        conv_node.target = name
        node.replace_all_uses_with(conv_node)
        gm.graph.erase_node(node)
        count += 1
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    logger.debug("folded %d BatchNorm layers into convolutions", count)
    return count


class FoldedSkip(nn.Module):
    """A reference skip branch (1×1 conv + BN) for one task, as one 1×1 convolution with bias."""

    def __init__(self, skip: SkipBranch) -> None:
        super().__init__()
        plan: SkipPlan = skip.plan
        self.plan = plan
        self.conv = nn.Conv2d(plan.in_channels, plan.out_channels, 1, plan.stride, bias=True)
        conv, bn = skip.task_layers(0)
        with torch.no_grad():
            weight, bias = _fold_into(conv.weight, None, bn.running_mean, bn.running_var,
                                      bn.weight, bn.bias, bn.eps)
            self.conv.weight.copy_(weight)
            self.conv.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = self.plan.pads(x.shape[-2], x.shape[-1])
        if pads is not None:
            x = F.pad(x, pads)
        return self.conv(x)


def fold_skip_branches(gm: fx.GraphModule) -> int:
    """Replace every one-task 1×1-conv skip branch by its folded convolution; returns how many."""
    modules = dict(gm.named_modules())
    count = 0
    for target in {n.target for n in gm.graph.nodes if n.op == "call_module"}:
        skip = modules[target]
        if isinstance(skip, SkipBranch) and skip.kind is SkipKind.CONV and len(skip.tasks) == 1 \
                and not skip.training:
            parent, _, leaf = target.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, leaf, FoldedSkip(skip))
            count += 1
    gm.recompile()
    return count
