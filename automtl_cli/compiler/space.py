"""The search space a supermodel offers, and its size, computed from the IR alone.

Compile reports the parameter breakdown without materialising a single weight (so compiling
Deeplab-ResNet34 with five tasks stays in milliseconds); `tests/test_supermodel.py` checks the
figures against the built module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from automtl_cli.compiler.strategies.bn import BN_MODES, BnMode, BnStrategy
from automtl_cli.compiler.strategies.skip import SKIP_MODES, SkipKind, SkipMode
from automtl_cli.frontend.ir import Graph, Node
from automtl_cli.frontend.ops import LAYER_KINDS

__all__ = ["SearchSpace", "SkipPlan", "follows_searchable", "skip_plan", "space_summary"]


@dataclass(frozen=True)
class SearchSpace:
    """Which tasks share the backbone, and how BatchNorm and the skip branch behave.

    bn and skip name a strategy (`BnMode`, `SkipMode`; each choice is described in its module
    under `compiler/strategies/`); they are stored as plain strings, as artifacts keep them.
    """

    tasks: tuple[str, ...]
    bn: str = BnMode.TASK.value
    skip: str = SkipMode.REFERENCE.value

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("tasks: at least one task is needed")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks: duplicate names in {', '.join(self.tasks)}")
        for t in self.tasks:
            if not t.isidentifier():
                raise ValueError(f"tasks: {t!r} is not a valid task name (letters, digits, _)")
        object.__setattr__(self, "bn", BN_MODES.get(self.bn).name.value)
        object.__setattr__(self, "skip", SKIP_MODES.get(self.skip).name.value)

    @property
    def bn_strategy(self) -> BnStrategy:
        return BN_MODES.get(self.bn)

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "bn": self.bn, "skip": self.skip}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchSpace:
        return cls(tuple(d["tasks"]), d["bn"], d["skip"])


@dataclass(frozen=True)
class SkipPlan:
    """How a skip branch reproduces its convolution's output shape, for any input size.

    The skip samples the input pixel at the centre of each window the convolution reads: a
    stride-s sampling after padding (or cropping) the input by the convolution's padding minus
    half its dilated kernel. For the usual "same" padding that is no padding at all, which is
    exactly the reference's 1×1 stride-s skip.
    """

    kind: SkipKind
    kernel: tuple[int, int]
    pad: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    in_channels: int
    out_channels: int

    @property
    def params(self) -> int:
        """Per task: the 1×1 convolution's weights and its BN's γ/β."""
        return self.in_channels * self.out_channels + 2 * self.out_channels \
            if self.kind is SkipKind.CONV else 0

    def pads(self, h: int, w: int) -> tuple[int, int, int, int] | None:
        """F.pad amounts (left, right, top, bottom; negative crops) for an h×w input."""
        top, bottom = _axis_pads(h, self.kernel[0], self.pad[0], self.stride[0], self.dilation[0])
        left, right = _axis_pads(w, self.kernel[1], self.pad[1], self.stride[1], self.dilation[1])
        return (left, right, top, bottom) if left or right or top or bottom else None


def _axis_pads(size: int, kernel: int, pad: int, stride: int, dilation: int) -> tuple[int, int]:
    """Pads (negative: crops) so that sampling every `stride`-th pixel hits the window centres."""
    out = (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    left = pad - dilation * (kernel - 1) // 2
    if left == 0 and (size - 1) // stride + 1 == out:
        return 0, 0
    right = (out - 1) * stride + 1 - size - left
    return left, right


def skip_plan(node: Node, in_shape: tuple[int, ...], mode: str) -> SkipPlan:
    """The skip of search node `node` under skip mode `mode` (a `SkipMode` name)."""
    a = node.attrs
    cin, cout = in_shape[1], node.shapes[0][1]
    stride = tuple(a["stride"])
    if cin == cout and stride == (1, 1):
        kind = SkipKind.IDENTITY
    else:
        kind = SKIP_MODES.get(mode).reshape_kind
    return SkipPlan(kind, tuple(a["kernel"]), tuple(a["pad"]), stride, tuple(a["dilation"]),
                    cin, cout)


def follows_searchable(graph: Graph) -> dict[str, str]:
    """BatchNorm node → the searchable convolution it directly and solely follows."""
    producers = {v: n for n in graph.nodes for v in n.outputs}
    consumers: dict[str, int] = {}
    for n in graph.nodes:
        for v in n.inputs:
            consumers[v] = consumers.get(v, 0) + 1
    out = {}
    for n in graph.nodes:
        if LAYER_KINDS[n.type].batch_statistics:
            src = producers.get(n.inputs[0])
            if src is not None and src.searchable and consumers[n.inputs[0]] == 1 and \
                    src.outputs[0] != graph.output:
                out[n.name] = src.name
    return out


def space_summary(graph: Graph, space: SearchSpace) -> dict[str, Any]:
    """Parameter breakdown of the supermodel and the search nodes, as compile reports them."""
    t = len(space.tasks)
    shapes = graph.value_shapes()
    follows = follows_searchable(graph)
    counts = dict.fromkeys(("shared_conv", "task_conv", "skip", "shared_bn", "task_bn",
                            "policy", "other"), 0)
    nodes = []
    for n in graph.nodes:
        if n.searchable:
            plan = skip_plan(n, shapes[n.inputs[0]], space.skip)
            counts["shared_conv"] += n.params
            counts["task_conv"] += t * n.params
            counts["skip"] += t * plan.params
            counts["policy"] += 3 * t
            nodes.append({"name": n.name, "depth": n.depth, "shared": n.params,
                          "specific": n.params, "skip": plan.params, "skip_kind": plan.kind,
                          "output_shape": list(n.shapes[0])})
        elif LAYER_KINDS[n.type].batch_statistics:
            counts["shared_bn"] += n.params
            if space.bn_strategy.has_task_copies(n.name in follows):
                counts["task_bn"] += t * n.params
        else:
            counts["other"] += n.params
    counts["total"] = sum(counts.values())
    return {**space.to_dict(), "params": counts, "search_nodes": nodes,
            "max_depth": graph.max_depth}
