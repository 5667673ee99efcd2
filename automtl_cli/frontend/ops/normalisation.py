"""Normalisation: BatchNorm, Scale, Bias and LRN, after Caffe's batch_norm, scale, bias and lrn
layers; caffe-segnet's BN, read as a BatchNorm (LEARN) or a Scale with bias (INFERENCE); and
LayerNorm, automtl's own type (PyTorch's `nn.LayerNorm` / `F.layer_norm` over the last axes, ONNX's
LayerNormalization), written as `layer { type: "LayerNorm" layer_norm_param { ... } }`, and
GroupNorm, automtl's too (`nn.GroupNorm`, ONNX's GroupNormalization), `group_norm_param`.

Scale and Bias take their operand either as a learned blob (one bottom) or from a second bottom,
whose shape is the first bottom's from `axis` on (Caffe's rule); the operand broadcasts over the
axes after it.

Caffe keeps a BatchNorm's statistics in the BatchNorm layer and its γ/β in a following Scale;
the AutoMTL dialect gives BatchNorm its own γ/β (`affine`). The front end folds the Caffe pair
into one affine BatchNorm node, and `BatchNorm.prototxt_layers` writes it back as the pair.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from google.protobuf.message import Message
from torch import nn

from automtl_cli.frontend.ops.base import (
    Attrs,
    LayerKind,
    LayerText,
    ReadContext,
    Shape,
    ShapeError,
    need_4d,
    norm_axis,
    register_layer,
)

__all__ = ["BN", "LRN", "BatchNorm", "Bias", "BroadcastOperand", "ChannelScale", "GroupNorm",
           "LayerNorm",
           "LayerNormModule", "LearnedBias", "LearnedScale", "LocalResponseNorm", "Scale"]


class ChannelScale(nn.Module):
    """Caffe's Scale layer on axis 1: a learnable per-channel γ (and β)."""

    def __init__(self, channels: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = x * self.weight.view(shape)
        return y + self.bias.view(shape) if self.bias is not None else y


class BroadcastOperand(nn.Module):
    """`x * b` or `x + b` for a second bottom `b` shaped like `x`'s axes `axis`...: Caffe's Scale
    and Bias with two bottoms (SENet's gate, `axis: 0`, is the common use)."""

    def __init__(self, axis: int, add: bool) -> None:
        super().__init__()
        self.axis, self.add = axis, add

    def forward(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        b = b.view((1,) * self.axis + tuple(b.shape) + (1,) * (x.dim() - self.axis - b.dim()))
        return x + b if self.add else x * b


def _operand_span(kind: str, a: Attrs, shapes: list[Shape]) -> tuple[int, Shape]:
    """The first axis and the shape of Scale's or Bias's operand, checked as Caffe checks it."""
    x = shapes[0]
    if len(x) < 1:
        raise ShapeError(f"{kind} needs an input with axes, got {list(x)}")
    start = norm_axis(a["axis"], len(x))
    if len(shapes) == 2:
        b = shapes[1]
        if tuple(x[start:start + len(b)]) != tuple(b):
            raise ShapeError(f"the second bottom {list(b)} must match the first bottom's axes "
                             f"from {start} on: {list(x)}")
        return start, tuple(b)
    end = len(x) if a["num_axes"] == -1 else start + a["num_axes"]
    if a["num_axes"] < -1 or end > len(x):
        raise ShapeError(f"num_axes {a['num_axes']} from axis {start} is out of range for "
                         f"{list(x)}")
    return start, tuple(x[start:end])


def _batch_operand_conflict(kind: str, a: Attrs, shapes: list[Shape]) -> str | None:
    """A second bottom is stacked over tasks on its own axis 0, so it must line up from axis 0."""
    if len(shapes) == 2 and a["axis"] % len(shapes[0]) != 0:
        return (f"{kind} by a second bottom along axis {a['axis']} (not 0) cannot be shared "
                "between tasks")
    return None


class LearnedScale(nn.Module):
    """Caffe's Scale with one bottom along `axis`...: a learned blob shaped like those axes of
    `x` (and a bias of that shape), broadcast over the axes after them."""

    def __init__(self, axis: int, shape: Shape, bias: bool) -> None:
        super().__init__()
        self.axis = axis
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1,) * self.axis + tuple(self.weight.shape) + (1,) * (
            x.dim() - self.axis - self.weight.dim())
        y = x * self.weight.view(shape)
        return y + self.bias.view(shape) if self.bias is not None else y


def _learned_span(a: Attrs) -> bool:
    """A one-bottom Scale along other axes than the channels (`num_axes` in its attrs); a
    two-bottom Scale has `axis` alone, a per-channel one neither."""
    return "num_axes" in a


@register_layer
class Scale(LayerKind):
    """One bottom: a learned γ (and β), per channel, or along `axis` for `num_axes` axes (a
    PyTorch trunk's layer scale, `x * self.gamma` over the last axis). Two bottoms: the second
    bottom is the scale (`axis`, default 1, is where it lines up with the first), plus a learned
    bias if asked."""

    type = "Scale"
    param_field = "scale_param"
    bottoms = (1, 2)

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        bias = bool(p.bias_term) if p is not None else False
        if len(layer.bottom) == 2:
            if bias:
                raise ctx.fail("bias_term with two bottoms is not supported (add a Bias layer)",
                               "scale_param.bias_term")
            return {"bias": False, "axis": int(p.axis) if p is not None else 1}
        if p is not None and (p.axis != 1 or p.num_axes != 1):
            if p.num_axes < -1:
                raise ctx.fail(f"num_axes must be -1 or more, got {p.num_axes}",
                               "scale_param.num_axes")
            return {"bias": bias, "axis": int(p.axis), "num_axes": int(p.num_axes)}
        return {"bias": bias}

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        if len(shapes) == 2:
            _operand_span(self.type, {**a, "num_axes": -1}, shapes)
        elif _learned_span(a):
            if _operand_span(self.type, a, shapes)[0] == 0:
                raise ShapeError("a learned scale along the batch axis (axis: 0) is not "
                                 "supported")
        elif len(shapes[0]) < 2:
            raise ShapeError(f"Scale needs a channel axis, got {list(shapes[0])}")
        return [shapes[0]]

    def count_params(self, a: Attrs, shapes: list[Shape]) -> int:
        if len(shapes) == 2:
            return 0
        per = math.prod(_operand_span(self.type, a, shapes)[1]) if _learned_span(a) \
            else shapes[0][1]
        return per * (2 if a["bias"] else 1)

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        if len(shapes) == 2:
            return BroadcastOperand(norm_axis(a["axis"], len(shapes[0])), add=False)
        if _learned_span(a):
            return LearnedScale(*_operand_span(self.type, a, shapes), a["bias"])
        return ChannelScale(shapes[0][1], a["bias"])

    def task_stacking_conflict(self, a: Attrs, shapes: list[Shape]) -> str | None:
        return _batch_operand_conflict(self.type, a, shapes)

    def param_text(self, a: Attrs) -> str:
        text = f"bias_term: {str(a['bias']).lower()}"
        text += f" axis: {a['axis']}" if "axis" in a else ""
        return text + (f" num_axes: {a['num_axes']}" if _learned_span(a) else "")

    def weight_names(self, a: Attrs, key: str) -> list[str] | None:
        if "axis" in a and not _learned_span(a):  # the scale is the second bottom
            return None
        return [f"{key}/gamma"] + ([f"{key}/beta"] if a["bias"] else [])


class LearnedBias(nn.Module):
    """Caffe's Bias with one bottom: a learned blob shaped like `x`'s axes `axis`..., added."""

    def __init__(self, axis: int, shape: Shape) -> None:
        super().__init__()
        self.axis = axis
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias
        return x + b.view((1,) * self.axis + tuple(b.shape)
                          + (1,) * (x.dim() - self.axis - b.dim()))


@register_layer
class Bias(LayerKind):
    """x + b: b learned (one bottom; `axis`, `num_axes` give its shape) or a second bottom."""

    type = "Bias"
    param_field = "bias_param"
    bottoms = (1, 2)

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        attrs = {"axis": int(p.axis) if p is not None else 1,
                 "num_axes": int(p.num_axes) if p is not None else 1}
        if len(layer.bottom) == 1 and attrs["num_axes"] < -1:
            raise ctx.fail(f"num_axes must be -1 or more, got {attrs['num_axes']}",
                           "bias_param.num_axes")
        if p is not None and p.HasField("filler") and p.filler.type != "constant":
            raise ctx.fail(f'only a constant bias filler is supported, got "{p.filler.type}"',
                           "bias_param.filler")
        return attrs

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        start, _ = _operand_span(self.type, a, shapes)
        if len(shapes) == 1 and start == 0:
            raise ShapeError("a learned bias along the batch axis (axis: 0) is not supported")
        return [shapes[0]]

    def count_params(self, a: Attrs, shapes: list[Shape]) -> int:
        return 0 if len(shapes) == 2 else math.prod(_operand_span(self.type, a, shapes)[1])

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        start, shape = _operand_span(self.type, a, shapes)
        return BroadcastOperand(start, add=True) if len(shapes) == 2 else LearnedBias(start,
                                                                                        shape)

    def task_stacking_conflict(self, a: Attrs, shapes: list[Shape]) -> str | None:
        return _batch_operand_conflict(self.type, a, shapes)

    def param_text(self, a: Attrs) -> str:
        return f"axis: {a['axis']} num_axes: {a['num_axes']}"

    def weight_names(self, a: Attrs, key: str) -> list[str] | None:
        return [f"{key}/b"]


_SCALE = Scale()


@register_layer
class BatchNorm(LayerKind):
    type = "BatchNorm"
    batch_statistics = True
    param_field = "batch_norm_param"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        automtl = ctx.dialect == "automtl"
        if p is None:
            return {"eps": 1e-5, "momentum": 0.1 if automtl else 0.001, "affine": automtl,
                    "bias": automtl, "track_running_stats": True}
        if automtl:
            momentum = p.momentum if p.HasField("momentum") else 0.1
        else:
            momentum = 1.0 - p.moving_average_fraction
        affine = p.affine if p.HasField("affine") else automtl
        return {
            "eps": float(p.eps),
            "momentum": float(momentum),
            "affine": bool(affine),
            "bias": bool(affine),
            "track_running_stats": bool(p.track_running_stats)
            if p.HasField("track_running_stats") else True,
        }

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        if len(shapes[0]) < 2:
            raise ShapeError(f"BatchNorm needs a channel axis, got {list(shapes[0])}")
        return [shapes[0]]

    def count_params(self, a: Attrs, shapes: list[Shape]) -> int:
        c = shapes[0][1]
        return (c if a["affine"] else 0) + (c if a["bias"] else 0)

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        bn = nn.BatchNorm2d(shapes[0][1], a["eps"], a["momentum"], a["affine"],
                            a["track_running_stats"])
        if a["affine"] and not a["bias"]:
            bn.register_parameter("bias", None)
        return bn

    def param_text(self, a: Attrs) -> str:
        return f"eps: {a['eps']!r} moving_average_fraction: {1.0 - a['momentum']!r}"

    def prototxt_layers(self, name: str, bottoms: list[str], tops: list[str], attrs: Attrs,
                        weights_key: str | None = None) -> list[LayerText]:
        """Caffe's way: the statistics in a BatchNorm, γ/β in an in-place Scale after it."""
        key = weights_key
        stats = [f"{key}/mean", f"{key}/var", f"{key}/factor"] if key else None
        out = [LayerText(name, self.type, bottoms, tops, self.param_field,
                         self.param_text(attrs), stats)]
        if attrs["affine"]:
            affine = ([f"{key}/gamma"] + ([f"{key}/beta"] if attrs["bias"] else [])) \
                if key else None
            out.append(LayerText(f"{name}/scale", _SCALE.type, tops, tops, _SCALE.param_field,
                                 _SCALE.param_text({"bias": attrs["bias"]}), affine))
        return out


_BATCHNORM = BatchNorm()


@register_layer
class BN(LayerKind):
    """caffe-segnet's BN: LEARN normalises with batch statistics, then a learned scale and shift
    (a BatchNorm with γ/β here); INFERENCE, what its compute_bn_statistics.py writes, has the
    statistics folded into the scale and shift (a Scale with bias here). 2·C parameters either
    way. Its ε is the fork's fixed 1e-9."""

    type = "BN"
    param_field = "bn_param"
    fork = "SegNet's caffe fork (alexgkendall/caffe-segnet)"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        for name in ("scale_filler", "shift_filler"):
            if p is not None and p.HasField(name) and getattr(p, name).type != "constant":
                raise ctx.fail(f'only a constant {name} is supported, got '
                               f'"{getattr(p, name).type}"', f"bn_param.{name}")
        inference = p is not None and p.bn_mode == p.INFERENCE
        return {"mode": "inference" if inference else "learn"}

    def lower(self, a: Attrs, shapes: list[Shape]) -> tuple[LayerKind, Attrs]:
        if len(shapes[0]) < 2:
            raise ShapeError(f"BN needs a channel axis, got {list(shapes[0])}")
        if a["mode"] == "inference":
            return _SCALE, {"bias": True}
        return _BATCHNORM, {"eps": 1e-9, "momentum": 0.1, "affine": True, "bias": True,
                            "track_running_stats": True}


class LocalResponseNorm(nn.Module):
    """Caffe's LRN; WITHIN_CHANNEL normalises over a spatial window, which torch does not offer."""

    def __init__(self, size: int, alpha: float, beta: float, k: float, within: bool) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k, self.within = size, alpha, beta, k, within

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.within:
            return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        pad = (self.size - 1) // 2
        mean_sq = F.avg_pool2d(x * x, self.size, 1, pad, count_include_pad=True)
        return x / (1.0 + self.alpha * mean_sq).pow(self.beta)


@register_layer
class LRN(LayerKind):
    type = "LRN"
    param_field = "lrn_param"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = layer.lrn_param
        if p.local_size < 1 or p.local_size % 2 == 0:
            raise ctx.fail(f"local_size must be odd and positive, got {p.local_size}",
                           "lrn_param.local_size")
        return {"size": int(p.local_size), "alpha": float(p.alpha), "beta": float(p.beta),
                "k": float(p.k), "within_channel": p.norm_region == p.WITHIN_CHANNEL}

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        need_4d(self.type, shapes[0])
        return [shapes[0]]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return LocalResponseNorm(a["size"], a["alpha"], a["beta"], a["k"], a["within_channel"])

    def param_text(self, a: Attrs) -> str:
        region = "WITHIN_CHANNEL" if a["within_channel"] else "ACROSS_CHANNELS"
        return (f"local_size: {a['size']} alpha: {a['alpha']!r} beta: {a['beta']!r} "
                f"k: {a['k']!r} norm_region: {region}")


class LayerNormModule(nn.Module):
    """Each position normalised over the axes from `axis` on, then γ and β of their shape."""

    def __init__(self, axis: int, shape: Shape, eps: float, affine: bool, bias: bool) -> None:
        super().__init__()
        self.axis, self.shape, self.eps = axis, tuple(shape), eps
        self.weight = nn.Parameter(torch.ones(shape)) if affine else None
        self.bias = nn.Parameter(torch.zeros(shape)) if affine and bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[self.axis:], self.weight, self.bias, self.eps)


@register_layer
class LayerNorm(LayerKind):
    """automtl's own type: the axes from `axis` on (-1: the last) normalised per position, with
    a learned γ (`affine`) and β (`bias`) of their shape. PyTorch trunks use it over the last
    axis of a channels-last block (ConvNeXt, between two Permutes); γ/β count as parameters."""

    type = "LayerNorm"
    param_field = "layer_norm_param"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        if p is None:
            return {"axis": -1, "eps": 1e-5, "affine": True, "bias": True}
        if not p.eps > 0:
            raise ctx.fail(f"eps must be positive, got {p.eps}", "layer_norm_param.eps")
        return {"axis": int(p.axis), "eps": float(p.eps), "affine": bool(p.affine),
                "bias": bool(p.affine and p.bias)}

    def _span(self, a: Attrs, shape: Shape) -> tuple[int, Shape]:
        axis = norm_axis(a["axis"], len(shape))
        if axis == 0:
            raise ShapeError("a LayerNorm over the batch axis (axis: 0) is not supported")
        return axis, tuple(shape[axis:])

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        self._span(a, shapes[0])
        return [shapes[0]]

    def count_params(self, a: Attrs, shapes: list[Shape]) -> int:
        per = math.prod(self._span(a, shapes[0])[1])
        return (per if a["affine"] else 0) + (per if a["bias"] else 0)

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        axis, shape = self._span(a, shapes[0])
        return LayerNormModule(axis, shape, a["eps"], a["affine"], a["bias"])

    def param_text(self, a: Attrs) -> str:
        return (f"axis: {a['axis']} eps: {a['eps']!r} affine: {str(a['affine']).lower()} "
                f"bias: {str(a['bias']).lower()}")

    def weight_names(self, a: Attrs, key: str) -> list[str] | None:
        if not a["affine"]:
            return None
        return [f"{key}/gamma"] + ([f"{key}/beta"] if a["bias"] else [])


@register_layer
class GroupNorm(LayerKind):
    """automtl's own type: the channels in `group` groups, each normalised per sample over its
    channels and the axes after them, then a per-channel γ and β (`affine`)."""

    type = "GroupNorm"
    param_field = "group_norm_param"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        if p is None:
            return {"group": 32, "eps": 1e-5, "affine": True}
        if p.group < 1:
            raise ctx.fail(f"group must be at least 1, got {p.group}", "group_norm_param.group")
        if not p.eps > 0:
            raise ctx.fail(f"eps must be positive, got {p.eps}", "group_norm_param.eps")
        return {"group": int(p.group), "eps": float(p.eps), "affine": bool(p.affine)}

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        s = shapes[0]
        if len(s) < 2 or s[1] % a["group"]:
            raise ShapeError(f"group {a['group']} does not divide the channels of {list(s)}")
        return [s]

    def count_params(self, a: Attrs, shapes: list[Shape]) -> int:
        return 2 * shapes[0][1] if a["affine"] else 0

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return nn.GroupNorm(a["group"], shapes[0][1], a["eps"], a["affine"])

    def param_text(self, a: Attrs) -> str:
        return f"group: {a['group']} eps: {a['eps']!r} affine: {str(a['affine']).lower()}"

    def weight_names(self, a: Attrs, key: str) -> list[str] | None:
        return [f"{key}/gamma", f"{key}/beta"] if a["affine"] else None
