"""The derived multi-task network: the per-task paths, merged wherever they compute the same thing.

Given a plan (for every search node and task: shared, specific or skip), each task's path through
the backbone is a sequence of ops. Two tasks' ops are the same value when they apply the same
op (same layer, same weights) to the same input value; numbering values that way (hash-consing)
turns the T paths into a tree in which every shared prefix is computed once and nothing unused is
left. Which BatchNorm a task uses decides where paths part: under `--bn task` every task has its
own BN, so paths part at the first BN (parameters are shared, compute is not); under `--bn
follow` a BN after a shared convolution is shared too, so a shared prefix runs once.

`build_tree` computes the tree from the IR alone (it is what `plan.json` accounts);
`DerivedBackbone` materialises it as an fx GraphModule whose weights come from a supermodel:
copied (the derived network of `derive`), or borrowed (the supermodel's own hard inference,
`Supermodel.forward`: views of the supermodel's tensors, rebuilt when those are replaced).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from automtl_cli.compiler.backbone import module_name
from automtl_cli.compiler.space import SearchSpace, follows_searchable, skip_plan
from automtl_cli.compiler.strategies.skip import SkipKind
from automtl_cli.compiler.supermodel import (
    Elementwise,
    Folded,
    SearchBatchNorm,
    SearchConv,
    Supermodel,
)
from automtl_cli.compiler.supermodel.conv import outs_shape
from automtl_cli.frontend.ir import Graph, Node, Shape
from automtl_cli.frontend.ops import LAYER_KINDS
from automtl_cli.registry import Choice

__all__ = ["CHOICES", "DerivedBackbone", "Op", "TaskBatched", "Tree", "TreeValue", "Variant",
           "build_tree"]

CHOICES = ("shared", "specific", "skip")
INPUT = 0  # the value id of the network input


class Variant(Choice):
    """Whose weights a tree value uses."""

    PLAIN = "plain"  # a layer that is not searched: one copy for every task
    SHARED = "shared"  # a search node's shared op, or a BatchNorm every task shares
    TASK = "task"  # a task's own copy
    SKIP = "skip"  # a task's skip branch with weights (1×1 convolution + BatchNorm)
    SKIP_FREE = "skip-free"  # a parameter-free skip, the same for every task

    @property
    def one_copy(self) -> bool:
        """Named after its layer alone: one module serves every task that reaches it."""
        return self in (Variant.PLAIN, Variant.SHARED)

    @property
    def is_skip(self) -> bool:
        return self in (Variant.SKIP, Variant.SKIP_FREE)


@dataclass(frozen=True)
class Op:
    """What a tree value computes: layer `node` with the weights of `variant` (and `task`)."""

    node: str
    variant: Variant
    task: str | None = None
    port: int | None = None  # one top of a several-top layer (Slice): item `port` of its tuple

    @property
    def module_name(self) -> str:
        base = module_name(self.node)
        if self.variant.one_copy:
            return base
        suffix = "skip_" if self.variant.is_skip else ""
        return f"{base}__{suffix}{self.task or 'all'}"


@dataclass
class TreeValue:
    id: int
    op: Op
    inputs: tuple[int, ...]
    shape: Shape
    params: int  # of the op's own weights
    flops: int  # per image (2 × multiply-adds of convolutions and matrix products)
    tasks: list[str] = field(default_factory=list)  # tasks whose path computes it


@dataclass
class Tree:
    tasks: tuple[str, ...]
    values: list[TreeValue]  # topological order; value ids start at 1
    outputs: dict[str, int]  # task → its feature's value id
    input_shape: Shape

    def path(self, task: str) -> list[TreeValue]:
        return [v for v in self.values if task in v.tasks]

    def modules(self, values: Sequence[TreeValue] | None = None) -> dict[Op, int]:
        """Distinct ops (modules) and their parameter counts."""
        out: dict[Op, int] = {}
        for v in values if values is not None else self.values:
            out[v.op] = v.params
        return out


def build_tree(graph: Graph, space: SearchSpace, choices: dict[str, Sequence[int]]) -> Tree:
    """Number the values of every task's path; equal (op, inputs) pairs are one value."""
    shapes = graph.value_shapes()
    follows = follows_searchable(graph)
    missing = [n.name for n in graph.searchable if n.name not in choices]
    if missing:
        raise ValueError(f"the plan has no choice for search node(s) {', '.join(missing)}")
    ids: dict[tuple[Op, tuple[int, ...]], int] = {}
    values: list[TreeValue] = []
    outputs: dict[str, int] = {}
    start = next(iter(graph.inputs))
    for t, task in enumerate(space.tasks):
        env = {start: INPUT}
        for node in graph.nodes:
            ins = tuple(env[v] for v in node.inputs)
            in_shapes = [shapes[v] for v in node.inputs]
            params = node.params
            flops = LAYER_KINDS[node.type].flops(node.attrs, in_shapes, node.shapes)
            if node.searchable:
                choice = choices[node.name][t]
                if choice == 0:
                    op = Op(node.name, Variant.SHARED)
                elif choice == 1:
                    op = Op(node.name, Variant.TASK, task)
                else:
                    plan = skip_plan(node, in_shapes[0], space.skip)
                    if plan.kind is SkipKind.IDENTITY and plan.pads(*in_shapes[0][2:]) is None:
                        env[node.outputs[0]] = ins[0]  # the skip is the input itself
                        continue
                    if plan.kind is SkipKind.CONV:
                        op = Op(node.name, Variant.SKIP, task)
                        _, cout, ho, wo = node.shapes[0]
                        flops = 2 * plan.in_channels * cout * ho * wo
                    else:
                        op = Op(node.name, Variant.SKIP_FREE)
                        flops = 0
                    params = plan.params
            elif LAYER_KINDS[node.type].batch_statistics:
                src = follows.get(node.name)
                own = space.bn_strategy.uses_task_copy(None if src is None else choices[src][t])
                op = Op(node.name, Variant.TASK, task) if own else Op(node.name, Variant.SHARED)
            else:
                op = Op(node.name, Variant.PLAIN)
            key = (op, ins)
            vid = ids.get(key)
            if vid is None:
                vid = len(values) + 1
                ids[key] = vid
                values.append(TreeValue(vid, op, ins, node.shapes[0], params, flops))
            if task not in values[vid - 1].tasks:
                values[vid - 1].tasks.append(task)
            if len(node.outputs) == 1:
                env[node.outputs[0]] = vid
                continue
            for i, out in enumerate(node.outputs):  # one value per top, reading the tuple
                port = (Op(node.name, op.variant, op.task, i), (vid,))
                pid = ids.get(port)
                if pid is None:
                    pid = len(values) + 1
                    ids[port] = pid
                    values.append(TreeValue(pid, port[0], port[1], node.shapes[i], 0, 0))
                if task not in values[pid - 1].tasks:
                    values[pid - 1].tasks.append(task)
                env[out] = pid
        outputs[task] = env[graph.output]
    # A value is on a task's path only if the task's output depends on it.
    for task in space.tasks:
        needed = {outputs[task]}
        for v in reversed(values):
            if v.id in needed:
                needed.update(v.inputs)
            elif task in v.tasks:
                v.tasks.remove(task)
    values = [v for v in values if v.tasks]
    return Tree(space.tasks, values, outputs, shapes[start])


class DerivedBackbone(nn.Module):
    """The tree as modules; `forward(x)` returns one feature per task, in task order.

    `borrow`: run on the supermodel's own tensors instead of copies, and run the tasks that
    apply one shared convolution to different activations as one call over their batches where
    that is faster (`TaskBatched`). For inference only (the supermodel in eval mode): a
    borrowed BatchNorm uses running statistics."""

    def __init__(self, tree: Tree, graph: Graph, space: SearchSpace,
                 supermodel: Supermodel, *, borrow: bool = False) -> None:
        super().__init__()
        self.tasks = tree.tasks
        shapes = graph.value_shapes()
        by_name = {node.name: node for node in graph.nodes}
        sources = {node.name: name for node, name in supermodel.node_modules}
        layers = nn.Module()
        fx_graph = fx.Graph()
        env = {INPUT: fx_graph.placeholder("x")}
        made: dict[Op, str] = {}
        self._taken = _Taken()

        def add(name: str, module: nn.Module) -> str:
            while hasattr(layers, name):  # two layers named alike once made module names
                name += "_"
            layers.add_module(name, module)
            return name

        def module_of(op: Op) -> str:
            name = made.get(op)
            if name is None:
                node = by_name[op.node]
                source = supermodel.graph_module.get_submodule(sources[node.name])
                in_shapes = [shapes[i] for i in node.inputs]
                module = _borrowed_module(op, source, space, self._taken) if borrow \
                    else _module_for(op, node, source, space, in_shapes)
                name = made[op] = add(op.module_name, module)
            return name

        values = tree.values
        together: dict[Op, list[TreeValue]] = {}
        if borrow:  # layer by layer, so that the tasks' calls of one layer can be one call
            order = {node.name: i for i, node in enumerate(graph.nodes)}
            values = sorted(values, key=lambda v: (order[v.op.node], v.op.port is not None))
            for v in values:
                if v.op.variant is Variant.SHARED and by_name[v.op.node].searchable:
                    together.setdefault(v.op, []).append(v)
        for v in values:
            if v.id in env:
                continue
            if v.op.port is not None:
                env[v.id] = fx_graph.call_function(operator.getitem, (env[v.inputs[0]],
                                                                     v.op.port))
                continue
            group = together.get(v.op, ())
            if len(group) > 1:
                conv = layers.get_submodule(module_of(v.op))
                batched = add(f"{v.op.module_name}__batched", TaskBatched(conv))
                call = fx_graph.call_module(batched, tuple(env[u.inputs[0]] for u in group))
                for j, u in enumerate(group):
                    env[u.id] = fx_graph.call_function(operator.getitem, (call, j))
                continue
            env[v.id] = fx_graph.call_module(module_of(v.op), tuple(env[i] for i in v.inputs))
        fx_graph.output(tuple(env[tree.outputs[t]] for t in tree.tasks))
        self.graph_module = fx.GraphModule(layers, fx_graph,
                                           class_name=f"Derived_{module_name(graph.name)}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.graph_module(x)

    def is_current(self) -> bool:
        """A borrowed network: whether every module and tensor it took from the supermodel is
        still the one there, in the same memory (a copied network: always)."""
        return self._taken.current()


def _module_for(op: Op, node: Node, source: nn.Module, space: SearchSpace,
                in_shapes: list[Shape]) -> nn.Module:
    """A copy of the weights `op` names, taken out of the supermodel's module."""
    t = space.tasks.index(op.task) if op.task is not None else None
    if isinstance(source, SearchConv):
        if op.variant is Variant.SHARED:
            return source.shared_conv()
        if op.variant is Variant.TASK:
            return source.task_conv(t)
        return source.skip.for_task(t)
    if isinstance(source, SearchBatchNorm):
        return source.task_batchnorm(t) if op.variant is Variant.TASK \
            else source.shared_batchnorm()
    if isinstance(source, (Folded, Elementwise)):
        return copy.deepcopy(source.op)
    raise TypeError(f"no derived module for {type(source).__name__}")  # pragma: no cover


class _Taken:
    """What a borrowed network took from the supermodel: each module or tensor with its owner
    and attribute, and a tensor's memory. Views made once are stale once any of them is not
    what the owner holds (a load with `assign=True`, `p.data = ...`, a move of a submodule,
    `functional_call`); the supermodel then builds the network again."""

    def __init__(self) -> None:
        self._items: dict[tuple[int, str], tuple[dict, str, Any, int | None]] = {}

    def take(self, owner: nn.Module, name: str) -> Any:
        value = getattr(owner, name)
        pointer = value.data_ptr() if isinstance(value, torch.Tensor) else None
        # the dict that holds it, read directly: checked every forward, so no __getattr__
        home = next((d for d in (owner._parameters, owner._buffers, owner._modules,
                                 owner.__dict__) if name in d), owner.__dict__)
        self._items[id(owner), name] = (home, name, value, pointer)
        return value

    def row(self, owner: nn.Module, name: str, t: int) -> torch.Tensor | None:
        value = self.take(owner, name)
        return value.detach()[t] if value is not None else None

    def current(self) -> bool:
        return all(home.get(name) is value
                   and (pointer is None or value.data_ptr() == pointer)
                   for home, name, value, pointer in self._items.values())


class _Borrowed(nn.Module):
    """`fn(x, *args)`, args views of a supermodel module's tensors made once (see `_Taken`),
    or `fn` a method of one of its modules."""

    def __init__(self, fn: Callable[..., torch.Tensor], *args: Any) -> None:
        super().__init__()
        self.fn, self.args = fn, args  # plain attributes: the tensors stay the supermodel's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, *self.args)


class TaskBatched(nn.Module):
    """One convolution over several tasks' activations: one call over their stacked batches
    where that is faster, one call per task otherwise. On this repository's CPU one call is
    faster while a task's output has at most 512 pixels (batch × height × width) and slower
    from a few thousand (docs/performance.md has the measurements); off the CPU one call is
    taken (fewer launches; not measured there yet). With gradients: one call per task."""

    PIXELS_PER_TASK = 512

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = (conv,)  # not a submodule: the network holds it under its own name

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        conv = self.conv[0]
        n, _, h, w = xs[0].shape
        ho, wo = outs_shape(conv, h, w)
        if torch.is_grad_enabled() or (xs[0].device.type == "cpu"
                                       and n * ho * wo > self.PIXELS_PER_TASK):
            return tuple(conv(x) for x in xs)
        return conv(torch.cat(xs)).split(n)


def _borrowed_module(op: Op, source: nn.Module, space: SearchSpace, taken: _Taken
                     ) -> nn.Module:
    """The module `op` names, on the supermodel's own tensors: a layer every task shares is
    the supermodel's module itself, a task's copy views of its stacked tensors."""
    t = space.tasks.index(op.task) if op.task is not None else 0
    if isinstance(source, SearchConv):
        if op.variant is Variant.SHARED:
            return taken.take(source, "shared")
        if op.variant is Variant.TASK:
            conv = source.shared
            return _Borrowed(F.conv2d, taken.row(source, "task_weight", t),
                             taken.row(source, "task_bias", t), conv.stride, conv.padding,
                             conv.dilation, source.groups)
        # task t's skip (any task's if weightless), on the node's own tensors
        return _Borrowed(taken.take(source, "skip").forward_task, t)
    if isinstance(source, SearchBatchNorm):
        if op.variant is Variant.TASK:
            rows = [taken.row(source, name, t)
                    for name in ("task_mean", "task_var", "task_weight", "task_bias")]
        else:  # functional, not the BatchNorm2d: a BN may follow a 2-D value (InnerProduct)
            bn = taken.take(source, "shared")
            rows = [taken.take(bn, name)
                    for name in ("running_mean", "running_var", "weight", "bias")]
        return _Borrowed(F.batch_norm, *rows, False, 0.0, source.eps)
    if isinstance(source, (Folded, Elementwise)):
        return taken.take(source, "op")
    raise TypeError(f"no derived module for {type(source).__name__}")  # pragma: no cover
