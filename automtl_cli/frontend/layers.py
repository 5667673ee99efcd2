"""The layer table: everything automtl knows about each prototxt layer type, in one place.

Each entry is a `LayerKind` registered under its Caffe type name. It says

* `read`: which fields of the layer it reads, validated, into a plain `attrs` dict;
* `infer`: the output shapes, by Caffe's rules, from the input shapes;
* `count_params`: its learnable parameters (weights, biases, affine γ/β; never running statistics);
* `build`: the torch module it becomes;
* `searchable`: whether the compiler turns it into a search node;
* `role`: "op" (a layer of the network), "input" (declares graph inputs), "data" (a train-time data
  source, replaced by a graph input), or "drop" (loss and accuracy layers, removed).

Adding a layer type means adding one class here and its tests; nothing else changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from google.protobuf.message import Message
from torch import nn

from automtl_cli.errors import SourceError

__all__ = ["LAYER_KINDS", "LayerKind", "ReadContext", "ShapeError", "get_kind", "register_layer"]

Shape = tuple[int, ...]
Attrs = dict[str, Any]

LAYER_KINDS: dict[str, LayerKind] = {}


class ShapeError(SourceError):
    """A shape rule failed; the graph builder adds the file, line and layer."""


@dataclass
class ReadContext:
    """What `read` may consult besides the layer: the dialect and the fields' lines."""

    dialect: str  # "caffe" or "automtl"
    field_line: Any  # callable(path) -> line

    def fail(self, message: str, path: str | None = None) -> SourceError:
        return SourceError(message, line=self.field_line(path) if path else None)


def register_layer(cls: type[LayerKind]) -> type[LayerKind]:
    for name in (cls.type, *cls.aliases):
        LAYER_KINDS[name] = cls()
    return cls


def get_kind(type_name: str) -> LayerKind | None:
    return LAYER_KINDS.get(type_name)


class LayerKind:
    type: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    role: ClassVar[str] = "op"
    param_field: ClassVar[str | None] = None  # the LayerParameter field holding its options
    bottoms: ClassVar[tuple[int, int | None]] = (1, 1)  # (min, max); None: no maximum
    tops: ClassVar[tuple[int, int | None]] = (1, 1)
    searchable: ClassVar[bool] = False

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        return {}

    def infer(self, attrs: Attrs, shapes: list[Shape]) -> list[Shape]:
        return [shapes[0]]

    def count_params(self, attrs: Attrs, shapes: list[Shape]) -> int:
        return 0

    def build(self, attrs: Attrs, shapes: list[Shape]) -> nn.Module:
        raise NotImplementedError(f"{self.type} does not become a torch module")

    def param_text(self, attrs: Attrs) -> str:
        """The `*_param { ... }` body that reads back as `attrs` (Caffe dialect; writers)."""
        return ""

    def params_of(self, layer: Message) -> Message | None:
        if self.param_field is None or not layer.HasField(self.param_field):
            return None
        return getattr(layer, self.param_field)


# --------------------------------------------------------------------------- helpers

def _pair(p: Message, name: str, hw: str | None, default: int | None, ctx: ReadContext,
          path: str, minimum: int = 0) -> tuple[int, int]:
    """Read Caffe's spatial geometry: `name` (one value, or one per axis) or `{hw}_h`/`{hw}_w`.

    Convolution's `name` fields are repeated, Pooling's are scalars; both forms are read here.
    """
    field = p.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:
        values = [int(v) for v in getattr(p, name)]
    else:
        values = [int(getattr(p, name))] if p.HasField(name) else []
    has_h = hw is not None and p.HasField(f"{hw}_h")
    has_w = hw is not None and p.HasField(f"{hw}_w")
    if has_h or has_w:
        if values:
            raise ctx.fail(f"give either {name} or {hw}_h/{hw}_w, not both", f"{path}.{hw}_h")
        if has_h != has_w and default is None:
            raise ctx.fail(f"{hw}_h and {hw}_w must be given together", f"{path}.{hw}_h")
        result = (int(getattr(p, f"{hw}_h")) if has_h else default,
                  int(getattr(p, f"{hw}_w")) if has_w else default)
    elif not values:
        if default is None:
            raise ctx.fail(f"{name} is required", path)
        result = (default, default)
    elif len(values) == 1:
        result = (values[0], values[0])
    elif len(values) == 2:
        result = (values[0], values[1])
    else:
        raise ctx.fail(f"{name} has {len(values)} values for 2 spatial axes", f"{path}.{name}")
    if min(result) < minimum:
        raise ctx.fail(f"{name} must be at least {minimum}, got {result[0]}x{result[1]}",
                       f"{path}.{name}")
    return result


def _need_4d(kind: str, shape: Shape) -> None:
    if len(shape) != 4:
        raise ShapeError(f"{kind} needs a 4-D input (N, C, H, W), got {list(shape)}")


def _axis(axis: int, ndim: int, what: str = "axis") -> int:
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{what} {axis} is out of range for a {ndim}-D input")
    return axis % ndim


def _window_out(size: int, kernel: int, pad: int, stride: int, dilation: int = 1) -> int:
    extent = dilation * (kernel - 1) + 1
    return (size + 2 * pad - extent) // stride + 1


# --------------------------------------------------------------------------- inputs and data

@register_layer
class Input(LayerKind):
    type = "Input"
    role = "input"
    param_field = "input_param"
    bottoms = (0, 0)
    tops = (1, None)

    def read(self, layer, ctx):
        p = self.params_of(layer)
        shapes = [tuple(int(d) for d in s.dim) for s in p.shape] if p is not None else []
        if shapes and len(shapes) not in (1, len(layer.top)):
            raise ctx.fail(f"{len(shapes)} shapes for {len(layer.top)} tops", "input_param.shape")
        if len(shapes) == 1:
            shapes = shapes * len(layer.top)
        return {"shapes": [list(s) for s in shapes]}


class _DataSource(LayerKind):
    """A train-time data layer: its first top becomes a graph input, its label is unused."""

    role = "data"
    bottoms = (0, 0)
    tops = (1, None)

    def read(self, layer, ctx):
        return {"shape": None, "hint": self.hint(layer)}

    def hint(self, layer) -> list[int] | None:
        return None


def _crop_hint(layer, batch_size: int | None) -> list[int] | None:
    crop = layer.transform_param.crop_size if layer.HasField("transform_param") else 0
    if crop and batch_size:
        return [int(batch_size), 3, int(crop), int(crop)]
    return None


@register_layer
class Data(_DataSource):
    type = "Data"
    param_field = "data_param"

    def hint(self, layer):
        return _crop_hint(layer, layer.data_param.batch_size or None)


@register_layer
class ImageData(_DataSource):
    type = "ImageData"
    param_field = "image_data_param"

    def hint(self, layer):
        return _crop_hint(layer, layer.image_data_param.batch_size or None)


@register_layer
class HDF5Data(_DataSource):
    type = "HDF5Data"
    param_field = "hdf5_data_param"


@register_layer
class WindowData(_DataSource):
    type = "WindowData"
    param_field = "window_data_param"


@register_layer
class MemoryData(_DataSource):
    type = "MemoryData"
    param_field = "memory_data_param"

    def read(self, layer, ctx):
        p = layer.memory_data_param
        dims = [p.batch_size, p.channels, p.height, p.width]
        return {"shape": dims if all(dims) else None, "hint": None}


@register_layer
class DummyData(_DataSource):
    type = "DummyData"
    param_field = "dummy_data_param"

    def read(self, layer, ctx):
        p = layer.dummy_data_param
        if p.shape:
            return {"shape": [int(d) for d in p.shape[0].dim], "hint": None}
        if p.num:
            return {"shape": [p.num[0], p.channels[0], p.height[0], p.width[0]], "hint": None}
        return {"shape": None, "hint": None}


class _Dropped(LayerKind):
    """Losses, accuracy and sinks: train-time only, removed from the graph."""

    role = "drop"
    bottoms = (0, None)
    tops = (0, None)


for _name in ("SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
              "InfogainLoss", "ContrastiveLoss", "MultinomialLogisticLoss", "Accuracy", "Silence"):
    register_layer(type(_name, (_Dropped,), {"type": _name}))


# --------------------------------------------------------------------------- convolutions

@register_layer
class Convolution(LayerKind):
    type = "Convolution"
    param_field = "convolution_param"
    searchable = True
    transposed = False

    def read(self, layer, ctx):
        p = self.params_of(layer)
        path = self.param_field
        if p is None or not p.HasField("num_output"):
            raise ctx.fail("convolution_param.num_output is required", path)
        if p.num_output < 1:
            raise ctx.fail("num_output must be at least 1", f"{path}.num_output")
        if p.group < 1:
            raise ctx.fail("group must be at least 1", f"{path}.group")
        if p.axis != 1:
            raise ctx.fail("only axis: 1 (NCHW) is supported", f"{path}.axis")
        return {
            "num_output": int(p.num_output),
            "kernel": list(_pair(p, "kernel_size", "kernel", None, ctx, path, minimum=1)),
            "stride": list(_pair(p, "stride", "stride", 1, ctx, path, minimum=1)),
            "pad": list(_pair(p, "pad", "pad", 0, ctx, path)),
            "dilation": list(_pair(p, "dilation", None, 1, ctx, path, minimum=1)),
            "group": int(p.group),
            "bias": bool(p.bias_term),
        }

    def _check_groups(self, a: Attrs, cin: int) -> None:
        g = a["group"]
        if cin % g:
            raise ShapeError(f"group {g} does not divide the {cin} input channels")
        if a["num_output"] % g:
            raise ShapeError(f"group {g} does not divide num_output {a['num_output']}")

    def infer(self, a, shapes):
        _need_4d(self.type, shapes[0])
        n, cin, h, w = shapes[0]
        self._check_groups(a, cin)
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = a["kernel"], a["stride"], a["pad"], a["dilation"]
        for size, k, p, d, axis in ((h, kh, ph, dh, "height"), (w, kw, pw, dw, "width")):
            if size + 2 * p < d * (k - 1) + 1:
                raise ShapeError(f"the {d * (k - 1) + 1}-wide window is larger than the padded "
                                 f"input {axis} {size}+2*{p}")
        return [(n, a["num_output"], _window_out(h, kh, ph, sh, dh),
                 _window_out(w, kw, pw, sw, dw))]

    def count_params(self, a, shapes):
        cin = shapes[0][1]
        kh, kw = a["kernel"]
        bias = a["num_output"] if a["bias"] else 0
        return a["num_output"] * (cin // a["group"]) * kh * kw + bias

    def build(self, a, shapes):
        return nn.Conv2d(shapes[0][1], a["num_output"], tuple(a["kernel"]), tuple(a["stride"]),
                         tuple(a["pad"]), tuple(a["dilation"]), a["group"], a["bias"])

    def param_text(self, a):
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = a["kernel"], a["stride"], a["pad"], a["dilation"]
        text = (f"num_output: {a['num_output']} bias_term: {str(a['bias']).lower()} "
                f"kernel_h: {kh} kernel_w: {kw} stride_h: {sh} stride_w: {sw} "
                f"pad_h: {ph} pad_w: {pw} group: {a['group']}")
        return text + (f" dilation: {dh}" if dh == dw else f" dilation: {dh} dilation: {dw}")


@register_layer
class Deconvolution(Convolution):
    type = "Deconvolution"
    searchable = False

    def infer(self, a, shapes):
        _need_4d(self.type, shapes[0])
        n, cin, h, w = shapes[0]
        self._check_groups(a, cin)
        dims = []
        for size, k, s, p, d in zip((h, w), a["kernel"], a["stride"], a["pad"], a["dilation"]):
            out = s * (size - 1) + d * (k - 1) + 1 - 2 * p
            if out < 1:
                raise ShapeError(f"output size {out} is not positive (padding {p} too large)")
            dims.append(out)
        return [(n, a["num_output"], *dims)]

    def count_params(self, a, shapes):
        kh, kw = a["kernel"]
        cin = shapes[0][1]
        bias = a["num_output"] if a["bias"] else 0
        return cin * (a["num_output"] // a["group"]) * kh * kw + bias

    def build(self, a, shapes):
        return nn.ConvTranspose2d(shapes[0][1], a["num_output"], tuple(a["kernel"]),
                                  tuple(a["stride"]), tuple(a["pad"]), 0, a["group"], a["bias"],
                                  tuple(a["dilation"]))


# --------------------------------------------------------------------------- normalisation

@register_layer
class BatchNorm(LayerKind):
    type = "BatchNorm"
    param_field = "batch_norm_param"

    def read(self, layer, ctx):
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

    def infer(self, a, shapes):
        if len(shapes[0]) < 2:
            raise ShapeError(f"BatchNorm needs a channel axis, got {list(shapes[0])}")
        return [shapes[0]]

    def count_params(self, a, shapes):
        c = shapes[0][1]
        return (c if a["affine"] else 0) + (c if a["bias"] else 0)

    def build(self, a, shapes):
        bn = nn.BatchNorm2d(shapes[0][1], a["eps"], a["momentum"], a["affine"],
                            a["track_running_stats"])
        if a["affine"] and not a["bias"]:
            bn.register_parameter("bias", None)
        return bn


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


@register_layer
class Scale(LayerKind):
    type = "Scale"
    param_field = "scale_param"

    def read(self, layer, ctx):
        p = self.params_of(layer)
        if p is not None and (p.axis != 1 or p.num_axes != 1):
            raise ctx.fail("only a per-channel Scale (axis: 1, num_axes: 1) is supported",
                           self.param_field)
        return {"bias": bool(p.bias_term) if p is not None else False}

    def count_params(self, a, shapes):
        return shapes[0][1] * (2 if a["bias"] else 1)

    def build(self, a, shapes):
        return ChannelScale(shapes[0][1], a["bias"])

    def param_text(self, a):
        return f"bias_term: {str(a['bias']).lower()}"


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

    def read(self, layer, ctx):
        p = layer.lrn_param
        if p.local_size < 1 or p.local_size % 2 == 0:
            raise ctx.fail(f"local_size must be odd and positive, got {p.local_size}",
                           "lrn_param.local_size")
        return {"size": int(p.local_size), "alpha": float(p.alpha), "beta": float(p.beta),
                "k": float(p.k), "within_channel": p.norm_region == p.WITHIN_CHANNEL}

    def infer(self, a, shapes):
        _need_4d(self.type, shapes[0])
        return [shapes[0]]

    def build(self, a, shapes):
        return LocalResponseNorm(a["size"], a["alpha"], a["beta"], a["k"], a["within_channel"])

    def param_text(self, a):
        region = "WITHIN_CHANNEL" if a["within_channel"] else "ACROSS_CHANNELS"
        return (f"local_size: {a['size']} alpha: {a['alpha']!r} beta: {a['beta']!r} "
                f"k: {a['k']!r} norm_region: {region}")


# --------------------------------------------------------------------------- activations

@register_layer
class ReLU(LayerKind):
    type = "ReLU"
    param_field = "relu_param"

    def read(self, layer, ctx):
        p = self.params_of(layer)
        return {"negative_slope": float(p.negative_slope) if p is not None else 0.0}

    def build(self, a, shapes):
        slope = a["negative_slope"]
        return nn.LeakyReLU(slope) if slope else nn.ReLU()

    def param_text(self, a):
        return f"negative_slope: {a['negative_slope']!r}" if a["negative_slope"] else ""


@register_layer
class ReLU6(LayerKind):
    type = "ReLU6"

    def build(self, a, shapes):
        return nn.ReLU6()


@register_layer
class Sigmoid(LayerKind):
    type = "Sigmoid"
    param_field = "sigmoid_param"

    def build(self, a, shapes):
        return nn.Sigmoid()


@register_layer
class TanH(LayerKind):
    type = "TanH"
    param_field = "tanh_param"

    def build(self, a, shapes):
        return nn.Tanh()


@register_layer
class Dropout(LayerKind):
    type = "Dropout"
    param_field = "dropout_param"

    def read(self, layer, ctx):
        p = self.params_of(layer)
        ratio = float(p.dropout_ratio) if p is not None else 0.5
        if not 0.0 <= ratio < 1.0:
            raise ctx.fail(f"dropout_ratio must be in [0, 1), got {ratio}",
                           "dropout_param.dropout_ratio")
        return {"ratio": ratio}

    def build(self, a, shapes):
        return nn.Dropout(a["ratio"])

    def param_text(self, a):
        return f"dropout_ratio: {a['ratio']!r}"


@register_layer
class Softmax(LayerKind):
    type = "Softmax"
    param_field = "softmax_param"

    def read(self, layer, ctx):
        p = self.params_of(layer)
        return {"axis": int(p.axis) if p is not None else 1}

    def infer(self, a, shapes):
        _axis(a["axis"], len(shapes[0]))
        return [shapes[0]]

    def build(self, a, shapes):
        return nn.Softmax(dim=_axis(a["axis"], len(shapes[0])))

    def param_text(self, a):
        return f"axis: {a['axis']}"


# --------------------------------------------------------------------------- pooling

class GlobalPool(nn.Module):
    def __init__(self, maximum: bool) -> None:
        super().__init__()
        self.maximum = maximum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax((2, 3), keepdim=True) if self.maximum else x.mean((2, 3), keepdim=True)


@register_layer
class Pooling(LayerKind):
    type = "Pooling"
    param_field = "pooling_param"

    def read(self, layer, ctx):
        p = self.params_of(layer)
        path = self.param_field
        if p is None:
            raise ctx.fail("pooling_param is required", None)
        if p.pool == p.STOCHASTIC:
            raise ctx.fail("STOCHASTIC pooling is not supported (MAX and AVE are)",
                           f"{path}.pool")
        if p.HasField("round_mode"):
            ceil = p.round_mode == p.CEIL
        elif p.HasField("ceil_mode"):
            ceil = bool(p.ceil_mode)
        else:
            ceil = ctx.dialect == "caffe"
        attrs: Attrs = {"method": "max" if p.pool == p.MAX else "ave", "ceil": ceil,
                        "global": bool(p.global_pooling)}
        if p.global_pooling:
            if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
                raise ctx.fail("global_pooling takes no kernel size", f"{path}.kernel_size")
            return attrs
        kernel = _pair(p, "kernel_size", "kernel", None, ctx, path, minimum=1)
        pad = _pair(p, "pad", "pad", 0, ctx, path)
        stride = _pair(p, "stride", "stride", 1, ctx, path, minimum=1)
        for k, q in zip(kernel, pad):
            if 2 * q > k:
                raise ctx.fail(f"pad {q} is more than half the kernel {k}", f"{path}.pad")
        attrs.update(kernel=list(kernel), pad=list(pad), stride=list(stride))
        return attrs

    def infer(self, a, shapes):
        _need_4d(self.type, shapes[0])
        n, c, h, w = shapes[0]
        if a["global"]:
            return [(n, c, 1, 1)]
        dims = []
        for size, k, p, s, axis in zip((h, w), a["kernel"], a["pad"], a["stride"],
                                       ("height", "width")):
            if size + 2 * p < k:
                raise ShapeError(f"the {k}-wide window is larger than the padded input {axis} "
                                 f"{size}+2*{p}")
            if a["ceil"]:
                out = math.ceil((size + 2 * p - k) / s) + 1
                if p > 0 and (out - 1) * s >= size + p:
                    out -= 1  # Caffe and torch: the last window must start inside the input
            else:
                out = (size + 2 * p - k) // s + 1
            dims.append(out)
        return [(n, c, *dims)]

    def build(self, a, shapes):
        if a["global"]:
            return GlobalPool(a["method"] == "max")
        if a["method"] == "max":
            return nn.MaxPool2d(tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pad"]),
                                ceil_mode=a["ceil"])
        return nn.AvgPool2d(tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pad"]),
                            ceil_mode=a["ceil"], count_include_pad=True)

    def param_text(self, a):
        method = "MAX" if a["method"] == "max" else "AVE"
        if a["global"]:
            return f"pool: {method} global_pooling: true"
        (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["pad"]
        return (f"pool: {method} kernel_h: {kh} kernel_w: {kw} stride_h: {sh} stride_w: {sw} "
                f"pad_h: {ph} pad_w: {pw} round_mode: {'CEIL' if a['ceil'] else 'FLOOR'}")


# --------------------------------------------------------------------------- joins and reshapes

class Eltwise_(nn.Module):
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

    def read(self, layer, ctx):
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

    def infer(self, a, shapes):
        for s in shapes[1:]:
            if s != shapes[0]:
                raise ShapeError("inputs differ in shape: "
                                 + " vs ".join(str(list(x)) for x in shapes))
        return [shapes[0]]

    def build(self, a, shapes):
        return Eltwise_(a["operation"], a["coeff"])

    def param_text(self, a):
        text = f"operation: {a['operation'].upper()}"
        return text + "".join(f" coeff: {c!r}" for c in a["coeff"] or ())


class Concat_(nn.Module):
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

    def read(self, layer, ctx):
        p = self.params_of(layer)
        if p is None:
            return {"axis": 1}
        return {"axis": int(p.axis) if p.HasField("axis") or not p.HasField("concat_dim")
                else int(p.concat_dim)}

    def infer(self, a, shapes):
        first = shapes[0]
        axis = _axis(a["axis"], len(first))
        for s in shapes[1:]:
            if len(s) != len(first) or any(x != y for i, (x, y) in enumerate(zip(s, first))
                                           if i != axis):
                raise ShapeError(f"inputs must match except on axis {axis}: "
                                 + " vs ".join(str(list(x)) for x in shapes))
        out = list(first)
        out[axis] = sum(s[axis] for s in shapes)
        return [tuple(out)]

    def build(self, a, shapes):
        return Concat_(_axis(a["axis"], len(shapes[0])))

    def param_text(self, a):
        return f"axis: {a['axis']}"


@register_layer
class Flatten(LayerKind):
    type = "Flatten"
    param_field = "flatten_param"

    def read(self, layer, ctx):
        p = self.params_of(layer)
        return {"axis": int(p.axis) if p else 1, "end_axis": int(p.end_axis) if p else -1}

    def _span(self, a, ndim):
        start, end = _axis(a["axis"], ndim), _axis(a["end_axis"], ndim, "end_axis")
        if end < start:
            raise ShapeError(f"end_axis {a['end_axis']} comes before axis {a['axis']}")
        return start, end

    def infer(self, a, shapes):
        s = shapes[0]
        start, end = self._span(a, len(s))
        return [(*s[:start], math.prod(s[start:end + 1]), *s[end + 1:])]

    def build(self, a, shapes):
        start, end = self._span(a, len(shapes[0]))
        return nn.Flatten(start, end)

    def param_text(self, a):
        return f"axis: {a['axis']} end_axis: {a['end_axis']}"


class Linear_(nn.Module):
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

    def read(self, layer, ctx):
        p = self.params_of(layer)
        if p is None or not p.HasField("num_output") or p.num_output < 1:
            raise ctx.fail("inner_product_param.num_output is required and positive",
                           self.param_field)
        if p.transpose:
            raise ctx.fail("transpose: true is not supported", f"{self.param_field}.transpose")
        return {"num_output": int(p.num_output), "bias": bool(p.bias_term), "axis": int(p.axis)}

    def infer(self, a, shapes):
        s = shapes[0]
        axis = _axis(a["axis"], len(s))
        return [(*s[:axis], a["num_output"])]

    def count_params(self, a, shapes):
        s = shapes[0]
        k = math.prod(s[_axis(a["axis"], len(s)):])
        return a["num_output"] * k + (a["num_output"] if a["bias"] else 0)

    def build(self, a, shapes):
        s = shapes[0]
        axis = _axis(a["axis"], len(s))
        return Linear_(axis, math.prod(s[axis:]), a["num_output"], a["bias"])


    def param_text(self, a):
        return (f"num_output: {a['num_output']} bias_term: {str(a['bias']).lower()} "
                f"axis: {a['axis']}")
