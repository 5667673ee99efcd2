"""Layers that change a blob's shape or order: Flatten, Reshape, InnerProduct (flatten from `axis`,
then a matrix product), Crop, Slice, Split, Tile, Reduction, ShuffleChannel and Permute, after
Caffe's flatten, reshape, inner_product, crop, slice, split, tile and reduction layers, ShuffleNet's
shuffle_channel layer (farmingyard/ShuffleNet) and SSD's permute layer (weiliu89/caffe).

Permute is how a channels-last block of a PyTorch trunk (ConvNeXt's `x.permute(0, 2, 3, 1)`, a
LayerNorm and Linear layers over the last axis, `x.permute(0, 3, 1, 2)`) stays what it is in the
IR: the ops between act on the last axis (LayerNorm `axis: -1`, InnerProduct `axis: 3`, a Scale
along axis 3), so nothing is rewritten, and an ONNX Transpose maps to the same kind.

Slice and Split have several tops: their torch modules return a tuple, one tensor per top.
"""

from __future__ import annotations

import itertools
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

__all__ = ["ChannelShuffle", "Copies", "Crop", "CropModule", "Flatten", "InnerProduct",
           "LinearFromAxis", "Permute", "PermuteModule", "Reduce", "Reduction", "Reshape",
           "ReshapeModule", "ShuffleChannel", "Slice", "SliceModule", "Split", "Tile",
           "TileModule"]


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

    def task_stacking_conflict(self, a: Attrs, shapes: list[Shape]) -> str | None:
        if self._span(a, len(shapes[0]))[0] == 0:
            return "Flatten from the batch axis cannot be shared between tasks"
        return None

    def param_text(self, a: Attrs) -> str:
        return f"axis: {a['axis']} end_axis: {a['end_axis']}"


def reshaped(dims: list[int], start: int, end: int, shape: Shape) -> Shape:
    """Caffe's Reshape: `shape[start:end]` replaced by `dims`, where 0 copies the input's size at
    that place and one -1 takes what the other sizes leave."""
    out: list[int] = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= len(shape):
                raise ShapeError(f"dim {i} is 0 (copy) but the input {list(shape)} has no axis "
                                 f"{start + i}")
            out.append(shape[start + i])
        else:
            out.append(d)
    known = math.prod(d for d in out if d != -1)
    total = math.prod(shape[start:end])
    if -1 in out:
        if known == 0 or total % known:
            raise ShapeError(f"cannot infer the -1 in {dims}: {total} values from "
                             f"{list(shape)} do not divide by {known}")
        out[out.index(-1)] = total // known
    elif known != total:
        raise ShapeError(f"shape {dims} holds {known} values, the input's axes {start} to "
                         f"{end - 1} of {list(shape)} hold {total}")
    return (*shape[:start], *out, *shape[end:])


class ReshapeModule(nn.Module):
    """Reshape by Caffe's rule, applied to the runtime shape (so a batch of any size works when
    the batch axis is copied or inferred)."""

    def __init__(self, dims: list[int], axis: int, num_axes: int) -> None:
        super().__init__()
        self.dims, self.axis, self.num_axes = dims, axis, num_axes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start, end = Reshape.span(self.axis, self.num_axes, x.dim())
        return x.reshape(reshaped(self.dims, start, end, tuple(x.shape)))


@register_layer
class Reshape(LayerKind):
    """`reshape_param { shape { dim } axis num_axes }`: the axes `axis` to `axis + num_axes`
    (all from `axis` when -1) become `shape`."""

    type = "Reshape"
    param_field = "reshape_param"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        if p is None or not p.HasField("shape"):
            raise ctx.fail("reshape_param.shape is required", self.param_field)
        dims = [int(d) for d in p.shape.dim]
        if any(d < -1 for d in dims) or dims.count(-1) > 1:
            raise ctx.fail(f"shape dims must be positive, 0 (copy) or one -1 (infer), got {dims}",
                           "reshape_param.shape")
        if p.num_axes < -1:
            raise ctx.fail(f"num_axes must be -1 or more, got {p.num_axes}",
                           "reshape_param.num_axes")
        return {"shape": dims, "axis": int(p.axis), "num_axes": int(p.num_axes)}

    @staticmethod
    def span(axis: int, num_axes: int, ndim: int) -> tuple[int, int]:
        """Caffe's axes: a negative `axis` counts from after the last axis (-1: append)."""
        start = axis if axis >= 0 else ndim + axis + 1
        if not 0 <= start <= ndim:
            raise ShapeError(f"axis {axis} is out of range for a {ndim}-D input")
        end = ndim if num_axes == -1 else start + num_axes
        if end > ndim:
            raise ShapeError(f"num_axes {num_axes} from axis {start} is out of range for a "
                             f"{ndim}-D input")
        return start, end

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        start, end = self.span(a["axis"], a["num_axes"], len(shapes[0]))
        return [reshaped(a["shape"], start, end, shapes[0])]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return ReshapeModule(a["shape"], a["axis"], a["num_axes"])

    def task_stacking_conflict(self, a: Attrs, shapes: list[Shape]) -> str | None:
        start, end = self.span(a["axis"], a["num_axes"], len(shapes[0]))
        out = self.infer(a, shapes)[0]
        if start == 0 and end > 0 and a["shape"] and a["shape"][0] not in (0, -1):
            return "Reshape that sets the batch axis cannot be shared between tasks"
        if len(out) < 2 or (start == 0 and a["shape"] and a["shape"][0] == -1
                            and out[0] != shapes[0][0]):
            return "Reshape that moves values across the batch axis cannot be shared between tasks"
        return None

    def param_text(self, a: Attrs) -> str:
        dims = " ".join(f"dim: {d}" for d in a["shape"])
        return f"shape {{ {dims} }} axis: {a['axis']} num_axes: {a['num_axes']}"


class SliceModule(nn.Module):
    def __init__(self, axis: int, sizes: list[int]) -> None:
        super().__init__()
        self.axis, self.sizes = axis, sizes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.split(x, self.sizes, self.axis))


@register_layer
class Slice(LayerKind):
    """Cut a blob along `axis` into the tops: at `slice_point`s (one fewer than the tops), or
    into equal parts when none are given (DPN's split of a convolution's output)."""

    type = "Slice"
    param_field = "slice_param"
    tops = (1, None)

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        if p is None:
            return {"axis": 1, "points": [], "tops": len(layer.top)}
        axis = int(p.slice_dim) if p.HasField("slice_dim") and not p.HasField("axis") \
            else int(p.axis)
        points = [int(q) for q in p.slice_point]
        if points and len(points) != len(layer.top) - 1:
            raise ctx.fail(f"{len(points)} slice_point values for {len(layer.top)} tops "
                           "(give one fewer than the tops)", "slice_param.slice_point")
        if any(b <= a for a, b in itertools.pairwise(points)):
            raise ctx.fail(f"slice_point values must increase, got {points}",
                           "slice_param.slice_point")
        return {"axis": axis, "points": points, "tops": len(layer.top)}

    def sizes(self, a: Attrs, shape: Shape) -> tuple[int, list[int]]:
        axis = norm_axis(a["axis"], len(shape))
        size = shape[axis]
        if not a["points"]:
            if size % a["tops"]:
                raise ShapeError(f"axis {axis} of size {size} does not split into {a['tops']} "
                                 "equal parts")
            return axis, [size // a["tops"]] * a["tops"]
        if a["points"][-1] >= size or a["points"][0] == 0:
            raise ShapeError(f"slice_point {a['points']} must lie inside axis {axis} of size "
                             f"{size}")
        edges = [0, *a["points"], size]
        return axis, [b - e for e, b in itertools.pairwise(edges)]

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        axis, sizes = self.sizes(a, shapes[0])
        s = shapes[0]
        return [(*s[:axis], n, *s[axis + 1:]) for n in sizes]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return SliceModule(*self.sizes(a, shapes[0]))

    def task_stacking_conflict(self, a: Attrs, shapes: list[Shape]) -> str | None:
        if a["axis"] % len(shapes[0]) == 0:
            return "Slice along the batch axis cannot be shared between tasks"
        return None

    def param_text(self, a: Attrs) -> str:
        return f"axis: {a['axis']}" + "".join(f" slice_point: {q}" for q in a["points"])


class Copies(nn.Module):
    """Caffe's Split: the bottom, once per top."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,) * self.n


@register_layer
class Split(LayerKind):
    type = "Split"
    tops = (1, None)
    elementwise = True

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        return {"tops": len(layer.top)}

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        return [shapes[0]] * a["tops"]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return Copies(a["tops"])


class TileModule(nn.Module):
    def __init__(self, axis: int, tiles: int) -> None:
        super().__init__()
        self.axis, self.tiles = axis, tiles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reps = [1] * x.dim()
        reps[self.axis] = self.tiles
        return x.repeat(*reps)


@register_layer
class Tile(LayerKind):
    """The blob repeated `tiles` times along `axis`, whole (Caffe's tile_layer.cpp)."""

    type = "Tile"
    param_field = "tile_param"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        if p is None or not p.HasField("tiles"):
            raise ctx.fail("tile_param.tiles is required", self.param_field)
        if p.tiles < 1:
            raise ctx.fail(f"tiles must be at least 1, got {p.tiles}", "tile_param.tiles")
        return {"axis": int(p.axis), "tiles": int(p.tiles)}

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        s = list(shapes[0])
        axis = norm_axis(a["axis"], len(s))
        s[axis] *= a["tiles"]
        return [tuple(s)]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return TileModule(norm_axis(a["axis"], len(shapes[0])), a["tiles"])

    def task_stacking_conflict(self, a: Attrs, shapes: list[Shape]) -> str | None:
        if a["axis"] % len(shapes[0]) == 0:
            return "Tile along the batch axis cannot be shared between tasks"
        return None

    def param_text(self, a: Attrs) -> str:
        return f"axis: {a['axis']} tiles: {a['tiles']}"


_REDUCTIONS = ("sum", "asum", "sumsq", "mean")


class Reduce(nn.Module):
    """Caffe's Reduction: every axis from `axis` on reduced, times `coeff`."""

    def __init__(self, operation: str, axis: int, coeff: float) -> None:
        super().__init__()
        self.operation, self.axis, self.coeff = operation, axis, coeff

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(self.axis, x.dim()))
        if self.operation == "asum":
            x = x.abs()
        elif self.operation == "sumsq":
            x = x * x
        y = x.mean(dims) if self.operation == "mean" else x.sum(dims)
        return y * self.coeff if self.coeff != 1.0 else y


@register_layer
class Reduction(LayerKind):
    """SUM, ASUM, SUMSQ or MEAN over the axes from `axis` on; the top keeps the axes before it."""

    type = "Reduction"
    param_field = "reduction_param"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        if p is None:
            return {"operation": "sum", "axis": 0, "coeff": 1.0}
        coeff = float(p.coeff)
        if not math.isfinite(coeff):
            raise ctx.fail(f"coeff must be finite, got {coeff}", "reduction_param.coeff")
        return {"operation": _REDUCTIONS[p.operation - 1], "axis": int(p.axis), "coeff": coeff}

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        s = shapes[0]
        return [tuple(s[:norm_axis(a["axis"], len(s))])]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return Reduce(a["operation"], norm_axis(a["axis"], len(shapes[0])), a["coeff"])

    def task_stacking_conflict(self, a: Attrs, shapes: list[Shape]) -> str | None:
        if norm_axis(a["axis"], len(shapes[0])) < 2:
            return ("Reduction over the channel (or batch) axis leaves no channel axis to stack "
                    "the tasks on")
        return None

    def param_text(self, a: Attrs) -> str:
        return (f"operation: {a['operation'].upper()} axis: {a['axis']} "
                f"coeff: {a['coeff']!r}")


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle: `[N, g·k, ...]` read as `[N, g, k, ...]`, transposed."""

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        rest = x.shape[2:]
        return x.reshape(n, self.group, c // self.group, *rest).transpose(1, 2).reshape(
            n, c, *rest)


@register_layer
class ShuffleChannel(LayerKind):
    type = "ShuffleChannel"
    param_field = "shuffle_channel_param"
    fork = "ShuffleNet's caffe fork (farmingyard/ShuffleNet)"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        group = int(p.group) if p is not None else 1
        if group < 1:
            raise ctx.fail(f"group must be at least 1, got {group}",
                           "shuffle_channel_param.group")
        return {"group": group}

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        s = shapes[0]
        if len(s) < 2 or s[1] % a["group"]:
            raise ShapeError(f"group {a['group']} does not divide the channels of {list(s)}")
        return [s]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return ChannelShuffle(a["group"])

    def param_text(self, a: Attrs) -> str:
        return f"group: {a['group']}"


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


class PermuteModule(nn.Module):
    def __init__(self, order: list[int]) -> None:
        super().__init__()
        self.order = tuple(order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.order)


@register_layer
class Permute(LayerKind):
    """The output's axis i is the input's axis `order[i]`; axes `order` leaves out follow in
    their order (SSD's rule)."""

    type = "Permute"
    param_field = "permute_param"
    fork = "SSD's caffe fork (weiliu89/caffe)"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        order = [int(o) for o in p.order] if p is not None else []
        if len(set(order)) != len(order):
            raise ctx.fail(f"order {order} names an axis twice", "permute_param.order")
        return {"order": order}

    def full_order(self, a: Attrs, ndim: int) -> list[int]:
        order = list(a["order"])
        if any(o >= ndim for o in order):
            raise ShapeError(f"order {order} names an axis beyond a {ndim}-D input")
        return order + [i for i in range(ndim) if i not in order]

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        s = shapes[0]
        return [tuple(s[i] for i in self.full_order(a, len(s)))]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return PermuteModule(self.full_order(a, len(shapes[0])))

    def task_stacking_conflict(self, a: Attrs, shapes: list[Shape]) -> str | None:
        order = self.full_order(a, len(shapes[0]))
        if order[0] != 0 or len(order) < 2:
            return "Permute that moves the batch axis cannot be shared between tasks"
        return None

    def param_text(self, a: Attrs) -> str:
        return " ".join(f"order: {o}" for o in a["order"])
