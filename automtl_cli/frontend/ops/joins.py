"""Layers that join several blobs into one: Eltwise (SUM with coeff, PROD, MAX), Concat and SENet's
Axpy (a·x + y).

Shape rules after Caffe's eltwise_layer.cpp and concat_layer.cpp, and SENet's axpy_layer.cpp
(hujie-frank/SENet).
"""

from __future__ import annotations

import torch
from google.protobuf.message import Message
from torch import nn

from automtl_cli.frontend.ops.base import (
    Attrs,
    LayerKind,
    ReadContext,
    Shape,
    ShapeError,
    format_shapes,
    norm_axis,
    register_layer,
)

__all__ = ["Axpy", "AxpyModule", "Concat", "ConcatModule", "Eltwise", "EltwiseModule"]


class EltwiseModule(nn.Module):
    def __init__(self, operation: str, coeff: list[float] | None) -> None:
        super().__init__()
        self.operation, self.coeff = operation, coeff

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.operation == "sum":
            if self.coeff is None:
                out = xs[0]
                for x in xs[1:]:
                    out = out + x
                return out
            out = xs[0] * self.coeff[0]
            for c, x in zip(self.coeff[1:], xs[1:]):
                out = out + c * x
            return out
        out = xs[0]
        for x in xs[1:]:
            out = out * x if self.operation == "prod" else torch.maximum(out, x)
        return out


@register_layer
class Eltwise(LayerKind):
    type = "Eltwise"
    param_field = "eltwise_param"
    bottoms = (2, None)
    elementwise = True

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        if p is None:
            return {"operation": "sum", "coeff": None}
        op = {p.PROD: "prod", p.SUM: "sum", p.MAX: "max"}[p.operation]
        coeff = [float(c) for c in p.coeff] or None
        if coeff is not None:
            if op != "sum":
                raise ctx.fail("coeff is only defined for operation: SUM", "eltwise_param.coeff")
            if len(coeff) != len(layer.bottom):
                raise ctx.fail(f"{len(coeff)} coeff values for {len(layer.bottom)} bottoms",
                               "eltwise_param.coeff")
            if all(c == 1.0 for c in coeff):
                coeff = None
        return {"operation": op, "coeff": coeff}

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        """Equal shapes, as in Caffe; or, automtl's extension for squeeze-and-excitation gates,
        a spatial axis of size 1 broadcast over the other input's (`[N, C, 1, 1] * [N, C, H, W]`),
        which keeps each channel's values apart, so the op stays `elementwise`."""
        out = list(shapes[0])
        for s in shapes[1:]:
            if len(s) != len(out) or s[:2] != tuple(out[:2]) or any(
                    x != y and 1 not in (x, y) for x, y in zip(s[2:], out[2:])):
                raise ShapeError("inputs differ in shape: " + format_shapes(shapes))
            out[2:] = [max(x, y) for x, y in zip(s[2:], out[2:])]
        return [tuple(out)]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return EltwiseModule(a["operation"], a["coeff"])

    def param_text(self, a: Attrs) -> str:
        text = f"operation: {a['operation'].upper()}"
        return text + "".join(f" coeff: {c!r}" for c in a["coeff"] or ())


class ConcatModule(nn.Module):
    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, self.axis)


@register_layer
class Concat(LayerKind):
    type = "Concat"
    param_field = "concat_param"
    bottoms = (1, None)

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        if p is None:
            return {"axis": 1}
        return {"axis": int(p.axis) if p.HasField("axis") or not p.HasField("concat_dim")
                else int(p.concat_dim)}

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        first = shapes[0]
        axis = norm_axis(a["axis"], len(first))
        for s in shapes[1:]:
            if len(s) != len(first) or any(x != y for i, (x, y) in enumerate(zip(s, first))
                                           if i != axis):
                raise ShapeError(f"inputs must match except on axis {axis}: "
                                 + format_shapes(shapes))
        out = list(first)
        out[axis] = sum(s[axis] for s in shapes)
        return [tuple(out)]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return ConcatModule(norm_axis(a["axis"], len(shapes[0])))

    def task_stacking_conflict(self, a: Attrs, shapes: list[Shape]) -> str | None:
        if a["axis"] % len(shapes[0]) == 0:
            return "Concat along the batch axis cannot be shared between tasks"
        return None

    def param_text(self, a: Attrs) -> str:
        return f"axis: {a['axis']}"


class AxpyModule(nn.Module):
    def forward(self, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return a * x + y


@register_layer
class Axpy(LayerKind):
    """a·x + y, bottoms (a, x, y), with a `[N, C, 1, 1]` (a channel gate) and x, y alike: each
    channel's values stay apart, so the op is `elementwise` for the supermodel."""

    type = "Axpy"
    bottoms = (3, 3)
    elementwise = True
    fork = "SENet's caffe fork (hujie-frank/SENet)"

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        gate, x, y = shapes
        if x != y:
            raise ShapeError(f"x and y (bottoms 2 and 3) differ in shape: {list(x)} vs {list(y)}")
        if len(x) < 2 or tuple(gate) != (*x[:2], *([1] * (len(x) - 2))):
            raise ShapeError(f"a (bottom 1) must be {[*x[:2], *([1] * (len(x) - 2))]} for x "
                             f"{list(x)}, got {list(gate)}")
        return [x]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return AxpyModule()
