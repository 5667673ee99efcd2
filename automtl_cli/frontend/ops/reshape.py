"""Layers that change a blob's shape: Flatten, InnerProduct (flatten from `axis`, then a matrix
product) and Crop, after Caffe's flatten_layer.cpp, inner_product_layer.cpp and crop_layer.cpp.
"""

from __future__ import annotations

import math

import torch
from google.protobuf.message import Message
from torch import nn

from automtl_cli.frontend.ops.base import (
    Attrs,
    LayerKind,
    ReadContext,
    Shape,
    ShapeError,
    norm_axis,
    register_layer,
)
from automtl_cli.frontend.ops.convolution import weight_and_bias_names

__all__ = ["Crop", "CropModule", "Flatten", "InnerProduct", "LinearFromAxis"]


class CropModule(nn.Module):
    """Caffe's Crop: `x` cut to `ref`'s size on every axis from `axis` on, from `offsets`.

    The size is read from `ref` when it runs, as Caffe reshapes to bottom[1]; only `ref`'s shape
    is used, never its values.
    """

    def __init__(self, axis: int, offsets: list[int]) -> None:
        super().__init__()
        self.axis, self.offsets = axis, offsets

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        for i, offset in enumerate(self.offsets, start=self.axis):
            x = x.narrow(i, offset, ref.shape[i])
        return x


@register_layer
class Crop(LayerKind):
    """FCN-style trunks crop an upsampled score map to a skip's (or the input's) size."""

    type = "Crop"
    param_field = "crop_param"
    bottoms = (2, 2)

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        if p is None:
            return {"axis": 2, "offset": []}
        return {"axis": int(p.axis), "offset": [int(o) for o in p.offset]}

    def offsets(self, a: Attrs, shapes: list[Shape]) -> tuple[int, list[int]]:
        """The first cropped axis and one offset per cropped axis, checked against the inputs."""
        x, ref = shapes
        if len(x) != len(ref):
            raise ShapeError(f"the two inputs must have the same number of axes: "
                             f"{list(x)} vs {list(ref)}")
        start = norm_axis(a["axis"], len(x))
        given = a["offset"]
        if len(given) > 1 and start + len(given) != len(x):
            raise ShapeError(f"{len(given)} offset values for the {len(x) - start} axes from "
                             f"axis {start}")
        offsets = given if len(given) > 1 else [given[0] if given else 0] * (len(x) - start)
        for i, offset in enumerate(offsets, start=start):
            if x[i] - offset < ref[i]:
                raise ShapeError(f"the crop of axis {i} is out of bounds: size {ref[i]} at "
                                 f"offset {offset} in {x[i]}")
        return start, offsets

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        start, _ = self.offsets(a, shapes)
        return [(*shapes[0][:start], *shapes[1][start:])]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return CropModule(*self.offsets(a, shapes))

    def task_stacking_conflict(self, a: Attrs, shapes: list[Shape]) -> str | None:
        if a["axis"] % len(shapes[0]) == 0:
            return "Crop along the batch axis cannot be shared between tasks"
        return None

    def param_text(self, a: Attrs) -> str:
        return f"axis: {a['axis']}" + "".join(f" offset: {o}" for o in a["offset"])


@register_layer
class Flatten(LayerKind):
    type = "Flatten"
    param_field = "flatten_param"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        return {"axis": int(p.axis) if p else 1, "end_axis": int(p.end_axis) if p else -1}

    def _span(self, a: Attrs, ndim: int) -> tuple[int, int]:
        start, end = norm_axis(a["axis"], ndim), norm_axis(a["end_axis"], ndim, "end_axis")
        if end < start:
            raise ShapeError(f"end_axis {a['end_axis']} comes before axis {a['axis']}")
        return start, end

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        s = shapes[0]
        start, end = self._span(a, len(s))
        return [(*s[:start], math.prod(s[start:end + 1]), *s[end + 1:])]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        start, end = self._span(a, len(shapes[0]))
        return nn.Flatten(start, end)

    def param_text(self, a: Attrs) -> str:
        return f"axis: {a['axis']} end_axis: {a['end_axis']}"


class LinearFromAxis(nn.Module):
    """InnerProduct: flatten from `axis`, then a matrix product."""

    def __init__(self, axis: int, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.axis = axis
        self.linear = nn.Linear(in_features, out_features, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(self.axis))


@register_layer
class InnerProduct(LayerKind):
    type = "InnerProduct"
    param_field = "inner_product_param"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        if p is None or not p.HasField("num_output") or p.num_output < 1:
            raise ctx.fail("inner_product_param.num_output is required and positive",
                           self.param_field)
        if p.transpose:
            raise ctx.fail("transpose: true is not supported", f"{self.param_field}.transpose")
        return {"num_output": int(p.num_output), "bias": bool(p.bias_term), "axis": int(p.axis)}

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        s = shapes[0]
        axis = norm_axis(a["axis"], len(s))
        return [(*s[:axis], a["num_output"])]

    def count_params(self, a: Attrs, shapes: list[Shape]) -> int:
        s = shapes[0]
        k = math.prod(s[norm_axis(a["axis"], len(s)):])
        return a["num_output"] * k + (a["num_output"] if a["bias"] else 0)

    def flops(self, a: Attrs, in_shapes: list[Shape], out_shapes: list[Shape]) -> int:
        s = in_shapes[0]
        axis = a["axis"] % len(s)
        rows = math.prod(s[1:axis])  # per image
        return 2 * rows * math.prod(s[axis:]) * a["num_output"]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        s = shapes[0]
        axis = norm_axis(a["axis"], len(s))
        return LinearFromAxis(axis, math.prod(s[axis:]), a["num_output"], a["bias"])

    def param_text(self, a: Attrs) -> str:
        return (f"num_output: {a['num_output']} bias_term: {str(a['bias']).lower()} "
                f"axis: {a['axis']}")

    def weight_names(self, a: Attrs, key: str) -> list[str] | None:
        return weight_and_bias_names(key, a["bias"])
