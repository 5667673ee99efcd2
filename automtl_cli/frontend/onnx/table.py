"""The ONNX op table: which ONNX operators become which layer kinds of
`automtl_cli.frontend.ops`, with which attributes and weights.

A rule reads one node (its attributes, the constants among its inputs, the shapes of the others)
and returns a `Layer` (a kind, its attributes, its tensor inputs and its weights keyed as the
state dict of the kind's own module), an `Alias` (an op that passes its input through: Identity,
a reshape to the same shape), a `Pending` (part of a pattern that only a later node completes: a
zero Pad before a convolution, the 5-D view of a channel shuffle, the steps of an exact GELU
or of a LayerNorm written out), a `WeightOf` (MatMul's bias `Add`, a LayerNorm's γ and β
written out), or raises `Unsupported` with the reason.

Kinds that Caffe's long tail brings (PReLU, ELU, ShuffleChannel, Power, Bias, Reshape, Slice,
Upsample), and Scale, are filled from the Caffe fields they read (`_caffe_kind`), so this table
does not depend on how they store their attributes; where such a kind is not in the layer table,
the op is refused naming it. `docs/onnx.md` has the table in prose.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from google.protobuf import text_format

from automtl_cli.errors import SourceError
from automtl_cli.frontend.ir import Shape
from automtl_cli.frontend.onnx.fold import Unsupported, reshape_target
from automtl_cli.frontend.ops import LAYER_KINDS, Attrs, ReadContext
from automtl_cli.proto import automtl_pb2 as pb

__all__ = ["RULES", "Alias", "Layer", "Pending", "Unsupported", "WeightOf"]

ONLY_PARAMETER = "*"  # a weights key: the one parameter of a kind whose key this table can't know


@dataclass
class Layer:
    type: str
    attrs: Attrs
    inputs: list[str]  # ONNX tensor names
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    sources: tuple[str, ...] = ()  # the initialisers the weights come from (shared weights)
    outputs: list[str | None] | None = None  # the ONNX tensor of each output (None: unused);
    # None: one output, the node's first


@dataclass(frozen=True)
class Alias:
    tensor: str


@dataclass(frozen=True)
class Pending:
    kind: str  # "pad", "grouped" (N, g, C/g, H, W), "shuffled" (N, C/g, g, H, W), "gelu:*",
    # "ln:*" (data: the first normalised axis)
    tensor: str  # the real tensor it derives from
    data: tuple[int, ...]
    op: str  # the ONNX op that made it, for errors
    value: float = 0.0  # "ln:eps", "ln:std": the epsilon


@dataclass(frozen=True)
class WeightOf:
    """A constant that becomes a weight of the layer that wrote `tensor`: `Add(MatMul(x, W), b)`
    is the InnerProduct's bias; the Mul and Add after a LayerNorm written out are its γ and β.
    The layer's attribute `attr` becomes true and its state dict gets `key`."""

    tensor: str
    attr: str
    key: str
    value: np.ndarray


class Env(Protocol):
    opset: int

    def const(self, name: str) -> np.ndarray | None: ...
    def shape(self, name: str) -> Shape: ...
    def pending(self, name: str) -> Pending | None: ...
    def folds_into(self, name: str) -> tuple[str, Attrs] | None: ...
    def consumer_ops(self, name: str) -> list[str]: ...
    def learned(self, name: str) -> bool: ...


Rule = Callable[[Env, Any, dict[str, Any]], "Layer | Alias | Pending | WeightOf"]


def _input(node: Any, i: int) -> str | None:
    return node.input[i] if len(node.input) > i and node.input[i] else None


def _need_const(env: Env, node: Any, i: int, what: str) -> np.ndarray:
    name = _input(node, i)
    value = env.const(name) if name else None
    if value is None:
        raise Unsupported(f"its {what} must be a constant (an initialiser)")
    return value


def _opt_const(env: Env, node: Any, i: int, what: str) -> np.ndarray | None:
    return _need_const(env, node, i, what) if _input(node, i) else None


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _caffe_kind(kind_type: str, fields: str, tops: int = 1) -> Attrs:
    """The attributes of layer kind `kind_type`, read from the Caffe fields that spell them."""
    kind = LAYER_KINDS.get(kind_type)
    layer = pb.LayerParameter()
    top_text = " ".join(f'top: "t{i}"' for i in range(tops))
    try:
        if kind is None:
            raise text_format.ParseError("no such kind")
        text_format.Parse(f'name: "onnx" type: "{kind_type}" bottom: "x" {top_text} {fields}',
                          layer)
    except text_format.ParseError as e:
        raise Unsupported(f"needs the {kind_type} layer kind, which this automtl lacks") from e
    try:
        return kind.read(layer, ReadContext("caffe", lambda path: None))
    except SourceError as e:
        raise Unsupported(e.message) from e


# --------------------------------------------------------------------------- geometry

def _spatial(a: dict[str, Any], name: str, default: int) -> list[int]:
    values = [int(v) for v in a.get(name, [default, default])]
    if len(values) != 2:
        raise Unsupported(f"{name}={values}: only 2-D (H, W) operators are supported")
    return values


def _pads(a: dict[str, Any], shape: Shape, kernel: list[int], stride: list[int],
          dilation: list[int]) -> list[int]:
    """Symmetric (h, w) padding from `pads` or `auto_pad`; uneven padding is refused."""
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(shape[2:], kernel, stride, dilation):
            total = max((math.ceil(size / s) - 1) * s + d * (k - 1) + 1 - size, 0)
            low = total // 2 if auto == "SAME_UPPER" else total - total // 2
            begin.append(low)
            end.append(total - low)
    elif auto == "VALID":
        begin, end = [0, 0], [0, 0]
    elif auto == "NOTSET":
        pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
        if len(pads) != 4:
            raise Unsupported(f"pads={pads}: only 2-D operators are supported")
        begin, end = pads[:2], pads[2:]
    else:
        raise Unsupported(f"auto_pad={auto}")
    if begin != end:
        raise Unsupported(f"uneven padding (begin {begin}, end {end} at input {list(shape)}); "
                          "the layer kinds pad both sides alike")
    return begin


def _four_d(env: Env, x: str, op: str) -> Shape:
    shape = env.shape(x)
    if len(shape) != 4:
        raise Unsupported(f"{op} on a {len(shape)}-D input (only N, C, H, W)")
    return shape


def _folded_pad(env: Env, x: str) -> tuple[str, list[int]]:
    """A zero Pad just before a convolution or average pooling becomes the layer's own pad."""
    p = env.pending(x)
    if p is not None and p.kind == "pad":
        return p.tensor, list(p.data)
    return x, [0, 0]


# --------------------------------------------------------------------------- convolutions

def _conv(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    x, extra = _folded_pad(env, node.input[0])
    shape = _four_d(env, x, node.op_type)
    w = _f32(_need_const(env, node, 1, "weight"))
    b = _opt_const(env, node, 2, "bias")
    if w.ndim != 4:
        raise Unsupported(f"a {w.ndim - 2}-D convolution (only 2-D)")
    transposed = node.op_type == "ConvTranspose"
    kernel = _spatial(a, "kernel_shape", 0) if "kernel_shape" in a else list(w.shape[2:])
    if kernel != list(w.shape[2:]):
        raise Unsupported(f"kernel_shape {kernel} differs from the weight's {list(w.shape[2:])}")
    stride, dilation = _spatial(a, "strides", 1), _spatial(a, "dilations", 1)
    group = int(a.get("group", 1))
    pad = _pads(a, shape, kernel, stride, dilation)
    if transposed:
        if any(int(p) for p in a.get("output_padding", [])) or "output_shape" in a:
            raise Unsupported("output_padding and output_shape are not supported")
        if any(extra):
            raise Unsupported("a Pad before a ConvTranspose")
        num_output, kind = w.shape[1] * group, "Deconvolution"
    else:
        num_output, kind = w.shape[0], "Convolution"
        pad = [p + q for p, q in zip(pad, extra)]
    cin = w.shape[0] if transposed else w.shape[1] * group
    if cin != shape[1]:
        raise Unsupported(f"its weight {list(w.shape)} (group {group}) takes {cin} channels, "
                          f"the input has {shape[1]}")
    weights = {"weight": w}
    if b is not None:
        weights["bias"] = _f32(b).reshape(-1)
    attrs = {"num_output": int(num_output), "kernel": kernel, "stride": stride, "pad": pad,
             "dilation": dilation, "group": group, "bias": b is not None}
    return Layer(kind, attrs, [x], weights, tuple(node.input[1:3]))


def _batchnorm(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    _four_d(env, node.input[0], node.op_type)
    gamma, beta, mean, var = (_f32(_need_const(env, node, i, what)) for i, what in
                              ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
    attrs = {"eps": float(a.get("epsilon", 1e-5)),
             "momentum": round(1.0 - float(a.get("momentum", 0.9)), 7),
             "affine": True, "bias": True, "track_running_stats": True}
    weights = {"weight": gamma, "bias": beta, "running_mean": mean, "running_var": var}
    return Layer("BatchNorm", attrs, [node.input[0]], weights, tuple(node.input[1:5]))


# --------------------------------------------------------------------------- activations

def _simple(kind: str, attrs: Attrs | None = None) -> Rule:
    def rule(env: Env, node: Any, a: dict[str, Any]) -> Layer:
        return Layer(kind, dict(attrs or {}), [node.input[0]])
    return rule


def _leaky(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    return Layer("ReLU", {"negative_slope": float(a.get("alpha", 0.01))}, [node.input[0]])


def _clip(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    if env.opset < 11:
        low, high = a.get("min"), a.get("max")
    else:
        lo, hi = _opt_const(env, node, 1, "min"), _opt_const(env, node, 2, "max")
        low = None if lo is None else float(lo.reshape(-1)[0])
        high = None if hi is None else float(hi.reshape(-1)[0])
    if low == 0.0 and high == 6.0:
        return Layer("ReLU6", {}, [node.input[0]])
    if low == 0.0 and (high is None or high >= 3.4e38):
        return Layer("ReLU", {"negative_slope": 0.0}, [node.input[0]])
    raise Unsupported(f"Clip to [{low}, {high}] (only [0, 6], ReLU6, and [0, inf), ReLU)")


def _hardsigmoid(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    if abs(alpha - 1 / 6) > 1e-6 or beta != 0.5:
        raise Unsupported(f"alpha={alpha}, beta={beta} (only torch's 1/6, 0.5)")
    return Layer("Hardsigmoid", {}, [node.input[0]])


def _gelu(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    approximate = a.get("approximate", b"none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    if approximate != "none":
        raise Unsupported(f"approximate={approximate!r} (only the exact GELU)")
    return Layer("GELU", {}, [node.input[0]])


def _prelu(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    shape = _four_d(env, node.input[0], node.op_type)
    slope = _f32(_need_const(env, node, 1, "slope"))
    shared = slope.size == 1
    if not shared and slope.size != shape[1]:
        raise Unsupported(f"a slope of shape {list(slope.shape)} (one per channel or one)")
    attrs = _caffe_kind("PReLU", f"prelu_param {{ channel_shared: {str(shared).lower()} }}")
    return Layer("PReLU", attrs, [node.input[0]], {ONLY_PARAMETER: slope.reshape(-1)},
                 (node.input[1],))


def _elu(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    alpha = float(a.get("alpha", 1.0))
    return Layer("ELU", _caffe_kind("ELU", f"elu_param {{ alpha: {alpha!r} }}"),
                 [node.input[0]])


def _softmax(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    rank = len(env.shape(node.input[0]))
    axis = int(a.get("axis", -1 if env.opset >= 13 else 1)) % rank
    if env.opset < 13 and axis != rank - 1:  # older Softmax flattens from `axis` on
        raise Unsupported(f"opset {env.opset} Softmax over the axes from {axis} on")
    return Layer("Softmax", {"axis": axis}, [node.input[0]])


def _dropout(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    ratio = _opt_const(env, node, 1, "ratio")
    p = float(ratio.reshape(-1)[0]) if ratio is not None else float(a.get("ratio", 0.5))
    return Layer("Dropout", {"ratio": p}, [node.input[0]])


# --------------------------------------------------------------------------- arithmetic

_NEUTRAL = {"Add": 0.0, "Sub": 0.0, "Mul": 1.0, "Div": 1.0}


def _scalar(c: np.ndarray | None, value: float) -> bool:
    return c is not None and c.size == 1 and abs(float(c.reshape(-1)[0]) - value) < 1e-6


def _gelu_step(env: Env, node: Any) -> Layer | Pending | None:
    """The exact GELU as exporters before opset 20 write it, x * (1 + erf(x / √2)) * 0.5, one
    step at a time: each step a Pending, the last the GELU layer; None when `node` is no step."""
    op, (x, y) = node.op_type, node.input[:2]
    px, py = env.pending(x), env.pending(y)
    if op == "Div" and px is None and _scalar(env.const(y), math.sqrt(2)) \
            and env.consumer_ops(node.output[0]) == ["Erf"]:
        return Pending("gelu:div", x, (), "Div")
    if op == "Add" and px is not None and px.kind == "gelu:erf" and _scalar(env.const(y), 1.0):
        return Pending("gelu:add", px.tensor, (), "Add")
    if op == "Mul":
        for p, other in ((px, y), (py, x)):
            if p is not None and p.kind == "gelu:add" and other == p.tensor:
                return Pending("gelu:mul", p.tensor, (), "Mul")
        if px is not None and px.kind == "gelu:mul" and _scalar(env.const(y), 0.5):
            return Layer("GELU", {}, [px.tensor])
    return None


def _layer_norm_step(env: Env, node: Any, a: dict[str, Any], axes: list[int] | None = None
                     ) -> Layer | Pending | None:
    """LayerNorm as exporters before opset 17 write it, (x - mean(x)) / sqrt(var(x) + eps) over
    the trailing axes (ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div), one step at a
    time: each step a Pending, the Div a LayerNorm, whose γ and β are the Mul and Add after it
    (`WeightOf`); None when `node` is no step."""
    op, ins = node.op_type, list(node.input)
    ps = [env.pending(i) for i in ins[:2]]
    kinds = [p.kind if p is not None else None for p in ps]
    if op == "ReduceMean":
        if axes is None or not int(a.get("keepdims", 1)):
            return None
        if kinds[0] == "ln:square":
            p = ps[0]
            same = _trailing(axes, len(env.shape(p.tensor))) == p.data[0]
            return Pending("ln:var", p.tensor, p.data, op) if same else None
        rank = len(env.shape(ins[0]))
        first = _trailing(axes, rank) if ps[0] is None else None
        if first is not None and env.consumer_ops(node.output[0]) == ["Sub"] and \
                (first, rank) != (2, 4):  # over (2, 3) of N, C, H, W: global pooling
            return Pending("ln:mean", ins[0], (first,), op)
        return None
    if op == "Sub" and kinds[1] == "ln:mean" and ps[1].tensor == ins[0] and ps[0] is None:
        return Pending("ln:centred", ins[0], ps[1].data, op)
    if op == "Pow" and kinds[0] == "ln:centred" and _scalar(env.const(ins[1]), 2.0):
        return Pending("ln:square", ps[0].tensor, ps[0].data, op)
    if op == "Add" and kinds[0] == "ln:var":
        eps = env.const(ins[1])
        if eps is not None and eps.size == 1 and float(eps.reshape(-1)[0]) > 0:
            return Pending("ln:eps", ps[0].tensor, ps[0].data, op, float(eps.reshape(-1)[0]))
    if op == "Sqrt" and kinds[0] == "ln:eps":
        return Pending("ln:std", ps[0].tensor, ps[0].data, op, ps[0].value)
    if op == "Div" and kinds == ["ln:centred", "ln:std"] and ps[0].tensor == ps[1].tensor \
            and ps[0].data == ps[1].data:
        return Layer("LayerNorm", {"axis": ps[0].data[0], "eps": ps[1].value, "affine": False,
                                   "bias": False}, [ps[0].tensor])
    return None


def _trailing(axes: list[int], rank: int) -> int | None:
    """The first axis when `axes` are the last ones of a `rank`-D tensor, after the batch."""
    got = sorted(v % rank for v in axes)
    if not got or got != list(range(got[0], rank)) or got[0] == 0:
        return None
    return got[0]


def _pow(env: Env, node: Any, a: dict[str, Any]) -> Layer | Pending:
    """x ** p by a scalar constant: Power (by 2, a step of a LayerNorm written out)."""
    step = _layer_norm_step(env, node, a)
    if step is not None:
        return step
    p = env.const(node.input[1])
    if env.const(node.input[0]) is not None or p is None or p.size != 1:
        raise Unsupported("only a tensor to a scalar constant power")
    power = float(p.reshape(-1)[0])
    return Layer("Power", _caffe_kind("Power", f"power_param {{ power: {power!r} }}"),
                 [node.input[0]])


def _sqrt(env: Env, node: Any, a: dict[str, Any]) -> Layer | Pending:
    step = _layer_norm_step(env, node, a)
    if step is not None:
        return step
    return Layer("Power", _caffe_kind("Power", "power_param { power: 0.5 }"), [node.input[0]])


def _neg(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    return Layer("Power", _caffe_kind("Power", "power_param { power: 1 scale: -1 }"),
                 [node.input[0]])


def _erf(env: Env, node: Any, a: dict[str, Any]) -> Pending:
    p = env.pending(node.input[0])
    if p is None or p.kind != "gelu:div":
        raise Unsupported("Erf outside the exact GELU, x * (1 + erf(x / sqrt(2))) * 0.5")
    return Pending("gelu:erf", p.tensor, (), "Erf")


def _arith(env: Env, node: Any, a: dict[str, Any]) -> Layer | Alias | WeightOf | Pending:
    op = node.op_type
    x, y = node.input[0], node.input[1]
    step = _gelu_step(env, node) or _layer_norm_step(env, node, a)
    if step is not None:
        return step
    cx, cy = env.const(x), env.const(y)
    if cx is None and cy is None:
        if op == "Div":
            raise Unsupported("dividing one tensor by another")
        if env.pending(x) is None and env.pending(y) is None:
            rank_x, rank_y = len(env.shape(x)), len(env.shape(y))
            if rank_x != rank_y:
                raise Unsupported(f"broadcasting a {rank_y}-D tensor over a {rank_x}-D one")
        attrs = {"operation": "prod" if op == "Mul" else "sum",
                 "coeff": [1.0, -1.0] if op == "Sub" else None}
        return Layer("Eltwise", attrs, [x, y])
    if cx is not None and op == "Sub" and cx.size == 1:  # c - x = (c + -1 · x) ^ 1
        attrs = _caffe_kind("Power", f"power_param {{ power: 1 scale: -1 "
                                     f"shift: {float(cx.reshape(-1)[0])!r} }}")
        return Layer("Power", attrs, [y])
    if cx is not None and op in ("Sub", "Div"):
        raise Unsupported(f"a constant {'minus' if op == 'Sub' else 'divided by'} a tensor "
                          "(only a scalar minus a tensor)")
    tensor, c = (y, cx) if cx is not None else (x, cy)
    c = _f32(c)
    learned = env.learned(x if cx is not None else y)  # a parameter, kept though it is 1 or 0
    if np.all(c == _NEUTRAL[op]) and c.ndim <= len(env.shape(tensor)) and not learned:
        return Alias(tensor)
    shape = env.shape(tensor)
    folded = _weight_of(env, op, tensor, c, shape)
    if folded is not None:
        return folded
    if c.size == 1:  # y = (shift + scale * x) ^ 1
        value = float(c.reshape(-1)[0])
        scale, shift = {"Mul": (value, 0.0), "Div": (1.0 / value, 0.0), "Add": (1.0, value),
                        "Sub": (1.0, -value)}[op]
        attrs = _caffe_kind("Power", f"power_param {{ power: 1 scale: {scale!r} "
                                     f"shift: {shift!r} }}")
        return Layer("Power", attrs, [tensor])
    span = _operand_axes(c, shape)
    source = (y if cx is None else x,)
    if span is not None and op in ("Mul", "Div"):
        gamma = c.reshape(-1) if op == "Mul" else 1.0 / c.reshape(-1)
        along = "" if span == (1, 1) else f" axis: {span[0]} num_axes: {span[1]}"
        return Layer("Scale", _caffe_kind("Scale", f"scale_param {{ bias_term: false{along} }}"),
                     [tensor], {ONLY_PARAMETER: gamma}, source)
    if span is not None and op in ("Add", "Sub"):
        beta = c.reshape(-1) if op == "Add" else -c.reshape(-1)
        return Layer("Bias", _caffe_kind("Bias", f"bias_param {{ axis: {span[0]} "
                                                 f"num_axes: {span[1]} }}"),
                     [tensor], {ONLY_PARAMETER: beta}, source)
    raise Unsupported(f"{op} with a constant of shape {list(c.shape)} on an input of "
                      f"{list(shape)} (a scalar, or a factor along whole axes after the batch: "
                      "per channel, or per last axis in a channels-last block)")


def _weight_of(env: Env, op: str, tensor: str, c: np.ndarray, shape: Shape) -> WeightOf | None:
    """A MatMul's bias (Add of a vector over the last axis), or the γ (Mul) and β (Add) over
    the normalised axes of a LayerNorm written out, when the constant's only reader is the
    layer."""
    layer = env.folds_into(tensor)
    if layer is None or op not in ("Mul", "Add"):
        return None
    kind, attrs = layer
    if kind == "InnerProduct" and op == "Add" and not attrs["bias"] and \
            c.size == shape[-1] and c.ndim <= len(shape) and all(d == 1 for d in c.shape[:-1]):
        return WeightOf(tensor, "bias", "linear.bias", c.reshape(-1))
    if kind != "LayerNorm" or _operand_axes(c, shape) != (attrs["axis"],
                                                          len(shape) - attrs["axis"]):
        return None
    span = tuple(shape[attrs["axis"]:])
    if op == "Mul" and not attrs["affine"]:
        return WeightOf(tensor, "affine", "weight", c.reshape(span))
    if op == "Add" and attrs["affine"] and not attrs["bias"]:
        return WeightOf(tensor, "bias", "bias", c.reshape(span))
    return None


def _operand_axes(c: np.ndarray, shape: Shape) -> tuple[int, int] | None:
    """(first axis, number of axes) of the input that a constant operand runs along, as numpy
    broadcasting lines it up (from the right); None when it broadcasts inside that span, runs
    along the batch axis, or has more axes than the input. `[C, 1, 1]` on N, C, H, W is per
    channel, `(1, 1)`, and `[C]` on a channels-last N, H, W, C is along axis 3."""
    if c.ndim > len(shape):
        return None
    aligned = (1,) * (len(shape) - c.ndim) + tuple(c.shape)
    span = [i for i, d in enumerate(aligned) if d != 1]
    if not span or span[0] == 0:
        return None
    first, last = span[0], span[-1]
    if any(aligned[i] != shape[i] for i in range(first, last + 1)):
        return None
    return first, last + 1 - first


def _check_features(have: int, weight: int) -> None:
    if have != weight:
        raise Unsupported(f"its weight takes {weight} features, the input has {have} (at this "
                          "input size)")


def _gemm(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    x = node.input[0]
    if len(env.shape(x)) != 2 or int(a.get("transA", 0)):
        raise Unsupported("only a Gemm of a 2-D input by a constant (transA=0)")
    w = _f32(_need_const(env, node, 1, "weight"))
    w = (w if int(a.get("transB", 0)) else w.T) * np.float32(a.get("alpha", 1.0))
    _check_features(env.shape(x)[-1], w.shape[1])
    weights = {"linear.weight": w}
    c = _opt_const(env, node, 2, "bias")
    if c is not None:
        if c.size not in (1, w.shape[0]):
            raise Unsupported(f"a bias of shape {list(c.shape)} (one per output)")
        weights["linear.bias"] = np.broadcast_to(
            _f32(c).reshape(-1) * np.float32(a.get("beta", 1.0)), (w.shape[0],)).copy()
    return Layer("InnerProduct", {"num_output": int(w.shape[0]), "bias": c is not None,
                                  "axis": 1}, [x], weights, tuple(node.input[1:3]))


def _matmul(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    """`x @ W` over the last axis: nn.Linear on a tensor of rank > 2 (its bias is an Add)."""
    x = node.input[0]
    w = _f32(_need_const(env, node, 1, "weight"))
    if w.ndim != 2:
        raise Unsupported(f"a MatMul by a {w.ndim}-D constant (only a matrix)")
    rank = len(env.shape(x))
    _check_features(env.shape(x)[-1], w.shape[0])
    return Layer("InnerProduct", {"num_output": int(w.shape[1]), "bias": False,
                                  "axis": rank - 1}, [x], {"linear.weight": w.T.copy()},
                 (node.input[1],))


# --------------------------------------------------------------------------- joins, pooling

def _concat(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    if any(env.const(i) is not None for i in node.input):
        raise Unsupported("concatenating a constant")
    rank = len(env.shape(node.input[0]))
    axis = int(a["axis"]) % rank
    if axis == 0:
        raise Unsupported("concatenating along the batch axis")
    return Layer("Concat", {"axis": axis}, list(node.input))


def _pool(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    average = node.op_type == "AveragePool"
    x, extra = _folded_pad(env, node.input[0]) if average else (node.input[0], [0, 0])
    shape = _four_d(env, x, node.op_type)
    kernel = _spatial(a, "kernel_shape", 1)
    stride = _spatial(a, "strides", 1)
    if _spatial(a, "dilations", 1) != [1, 1]:
        raise Unsupported("dilated pooling")
    pad = _pads(a, shape, kernel, stride, [1, 1])
    if average and any(pad) and not int(a.get("count_include_pad", 0)):
        raise Unsupported("average pooling that leaves the padding out of the count "
                          "(count_include_pad=0)")
    pad = [p + q for p, q in zip(pad, extra)]
    return Layer("Pooling", {"method": "ave" if average else "max",
                             "ceil": bool(int(a.get("ceil_mode", 0))), "global": False,
                             "kernel": kernel, "pad": pad, "stride": stride}, [x])


def _global(method: str) -> Rule:
    def rule(env: Env, node: Any, a: dict[str, Any]) -> Layer:
        _four_d(env, node.input[0], node.op_type)
        return Layer("Pooling", {"method": method, "ceil": False, "global": True},
                     [node.input[0]])
    return rule


def _reduce(method: str) -> Rule:
    """`x.mean((2, 3), keepdim=True)`: global pooling; a mean over the trailing axes, kept, is
    the first step of a LayerNorm written out (opset < 17)."""
    def rule(env: Env, node: Any, a: dict[str, Any]) -> Layer | Pending:
        axes_input = _opt_const(env, node, 1, "axes")
        axes = [int(v) for v in (axes_input.reshape(-1) if axes_input is not None
                                 else a.get("axes", []))]
        step = _layer_norm_step(env, node, a, axes) if method == "ave" else None
        if step is not None:
            return step
        rank = len(_four_d(env, node.input[0], node.op_type))
        if sorted(v % rank for v in axes) != [2, 3] or not int(a.get("keepdims", 1)):
            raise Unsupported(f"axes={axes}, keepdims={a.get('keepdims', 1)} (only the spatial "
                              "axes 2, 3, kept)")
        return Layer("Pooling", {"method": method, "ceil": False, "global": True},
                     [node.input[0]])
    return rule


def _pad(env: Env, node: Any, a: dict[str, Any]) -> Pending:
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = _opt_const(env, node, 1, "pads")
    pads = [int(p) for p in (pads.reshape(-1) if pads is not None else a.get("pads", []))]
    value = _opt_const(env, node, 2, "constant value")
    value = float(value.reshape(-1)[0]) if value is not None else float(a.get("value", 0.0))
    if _input(node, 3):
        raise Unsupported("a Pad with axes")
    if mode != "constant" or value != 0.0 or len(pads) != 8 or any(pads[:2]) or \
            any(pads[4:6]) or pads[2:4] != pads[6:8]:
        raise Unsupported(f"Pad mode={mode}, value={value}, pads={pads} (only an even zero "
                          "padding of H and W, folded into the next Conv or AveragePool)")
    return Pending("pad", node.input[0], tuple(pads[2:4]), "Pad")


# --------------------------------------------------------------------------- shapes

def _slice_layer(node: Any, axis: int, points: list[int], outputs: list[str | None]
                 ) -> Layer:
    fields = f"slice_param {{ axis: {axis}" + "".join(f" slice_point: {p}" for p in points)
    attrs = _caffe_kind("Slice", fields + " }", tops=len(outputs))
    return Layer("Slice", attrs, [node.input[0]], outputs=outputs)


def _split(env: Env, node: Any, a: dict[str, Any]) -> Layer | Alias:
    """`torch.chunk` and `torch.split`: Caffe's Slice, cut at the running sums of the sizes."""
    shape = env.shape(node.input[0])
    axis = int(a.get("axis", 0)) % len(shape)
    if axis == 0:
        raise Unsupported("splitting the batch axis")
    given = _opt_const(env, node, 1, "split")
    outputs = [o or None for o in node.output]
    if given is not None:
        sizes = [int(v) for v in given.reshape(-1)]
    elif "split" in a:
        sizes = [int(v) for v in a["split"]]
    else:  # equal parts (opset 18's num_outputs: the last may be smaller)
        part = -(-shape[axis] // len(outputs))
        sizes = [min(part, shape[axis] - i * part) for i in range(len(outputs))]
    if len(sizes) != len(outputs) or sum(sizes) != shape[axis] or min(sizes) < 1:
        raise Unsupported(f"sizes {sizes} for {len(outputs)} outputs of an axis of "
                          f"{shape[axis]}")
    if len(sizes) == 1:
        return Alias(node.input[0])
    return _slice_layer(node, axis, list(np.cumsum(sizes[:-1])), outputs)


def _slice(env: Env, node: Any, a: dict[str, Any]) -> Layer | Alias:
    """`x[:, a:b]` on one axis, step 1: the middle piece of a Caffe Slice."""
    shape = env.shape(node.input[0])
    if env.opset < 10:
        starts, ends = list(a["starts"]), list(a["ends"])
        axes, steps = list(a.get("axes", range(len(starts)))), [1] * len(starts)
    else:
        starts = list(_need_const(env, node, 1, "starts").reshape(-1))
        ends = list(_need_const(env, node, 2, "ends").reshape(-1))
        axes_c, steps_c = _opt_const(env, node, 3, "axes"), _opt_const(env, node, 4, "steps")
        axes = list(axes_c.reshape(-1)) if axes_c is not None else list(range(len(starts)))
        steps = list(steps_c.reshape(-1)) if steps_c is not None else [1] * len(starts)
    cuts = []
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = int(axis) % len(shape)
        begin, stop, _ = slice(int(start), int(end)).indices(shape[axis])
        if (begin, stop) != (0, shape[axis]):
            cuts.append((axis, begin, stop, int(step)))
    if not cuts:
        return Alias(node.input[0])
    if len(cuts) > 1 or cuts[0][3] != 1 or cuts[0][0] == 0 or cuts[0][1] >= cuts[0][2]:
        raise Unsupported(f"Slice starts={starts} ends={ends} axes={axes} steps={steps} (only "
                          "one range of one axis besides the batch, step 1)")
    axis, begin, stop, _ = cuts[0]
    points = [p for p in (begin, stop) if 0 < p < shape[axis]]
    outputs: list[str | None] = [None] * (len(points) + 1)
    outputs[1 if begin > 0 else 0] = node.output[0]
    return _slice_layer(node, axis, points, outputs)


def _flatten(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    axis = int(a.get("axis", 1)) % max(len(env.shape(node.input[0])), 1)
    if axis == 0:
        raise Unsupported("flattening the batch axis (axis=0)")
    return Layer("Flatten", {"axis": axis, "end_axis": -1}, [node.input[0]])


def _reshape(env: Env, node: Any, a: dict[str, Any]) -> Layer | Alias | Pending:
    x = node.input[0]
    target_in = [int(d) for d in _need_const(env, node, 1, "shape").reshape(-1)]
    if target_in and target_in[0] > 0:  # a batch size baked in at export: the batch is kept
        target_in[0] = 0
    p = env.pending(x)
    if p is not None:
        if p.kind == "grouped" and reshape_target(_grouped(env, p), target_in) == \
                env.shape(p.tensor):  # the view undone: x.unsqueeze(2).squeeze(2)
            return Alias(p.tensor)
        if p.kind == "shuffled":
            shape = env.shape(p.tensor)
            if len(target_in) == 4 and reshape_target(
                    (shape[0], p.data[0], p.data[1], *shape[2:]), target_in) == shape:
                group = p.data[1]
                attrs = _caffe_kind("ShuffleChannel",
                                    f"shuffle_channel_param {{ group: {group} }}")
                return Layer("ShuffleChannel", attrs, [p.tensor])
        raise Unsupported(f"a Reshape after {p.op} (only a channel shuffle's)")
    shape = env.shape(x)
    return _reshape_to(x, shape, reshape_target(shape, target_in, bool(a.get("allowzero"))))


def _squeeze(env: Env, node: Any, a: dict[str, Any]) -> Layer | Alias | Pending:
    """`x.squeeze(-1)`, `x.unsqueeze(2)` and the like: reshapes."""
    x = node.input[0]
    shape = env.shape(x)
    given = _opt_const(env, node, 1, "axes")
    axes = [int(v) for v in (given.reshape(-1) if given is not None else a.get("axes", []))]
    p = env.pending(x)
    if p is not None and p.kind == "grouped" and node.op_type == "Squeeze":
        grouped = _grouped(env, p)
        drop = {v % 5 for v in axes} if axes else {i for i, d in enumerate(grouped) if d == 1}
        if tuple(d for i, d in enumerate(grouped) if i not in drop) == shape:
            return Alias(p.tensor)  # the view undone: x.unsqueeze(2).squeeze(2)
    if p is not None:
        raise Unsupported(f"a {node.op_type} after {p.op} (only a channel shuffle's)")
    if node.op_type == "Squeeze":
        drop = {v % len(shape) for v in axes} if axes else \
            {i for i, d in enumerate(shape) if d == 1}
        if any(shape[i] != 1 for i in drop):
            raise Unsupported(f"squeezing axes {sorted(drop)} of {list(shape)}, not all of size 1")
        target = tuple(d for i, d in enumerate(shape) if i not in drop)
    else:
        out = list(shape)
        for v in sorted(v % (len(shape) + len(axes)) for v in axes):
            out.insert(v, 1)
        target = tuple(out)
    return _reshape_to(x, shape, target)


def _grouped(env: Env, p: Pending) -> Shape:
    """The 5-D shape of a "grouped" view, (N, g, C/g, H, W)."""
    n, _, *spatial = env.shape(p.tensor)
    return (n, *p.data, *spatial)


def _reshape_to(x: str, shape: Shape, target: tuple[int, ...]) -> Layer | Alias | Pending:
    if target == shape:
        return Alias(x)
    if target[0] != shape[0]:
        raise Unsupported(f"a Reshape of {list(shape)} to {list(target)} changes the batch axis")
    if len(target) == 2:
        return Layer("Flatten", {"axis": 1, "end_axis": -1}, [x])
    if len(shape) == 4 and len(target) == 5 and target[1] * target[2] == shape[1] \
            and tuple(target[3:]) == shape[2:]:
        return Pending("grouped", x, (target[1], target[2]), "Reshape")
    dims = " ".join(f"dim: {d}" for d in (0, *target[1:]))
    attrs = _caffe_kind("Reshape", f"reshape_param {{ shape {{ {dims} }} }}")
    return Layer("Reshape", attrs, [x])


def _transpose(env: Env, node: Any, a: dict[str, Any]) -> Layer | Alias | Pending:
    """The middle of a channel shuffle, or a Permute (a channels-last block's (0, 2, 3, 1) and
    back); the batch axis must stay first."""
    x = node.input[0]
    perm = [int(v) for v in a.get("perm", [])]
    p = env.pending(x)
    if p is not None and p.kind == "grouped" and perm == [0, 2, 1, 3, 4]:
        return Pending("shuffled", p.tensor, (p.data[1], p.data[0]), "Transpose")
    if p is not None:
        raise Unsupported(f"Transpose with perm={perm} after {p.op} (only a channel shuffle's)")
    rank = len(env.shape(x))
    perm = perm or list(reversed(range(rank)))
    if sorted(perm) != list(range(rank)):
        raise Unsupported(f"perm={perm} is not a permutation of the {rank} axes")
    if perm == list(range(rank)):
        return Alias(x)
    if perm[0] != 0:
        raise Unsupported(f"Transpose with perm={perm} moves the batch axis")
    order = " ".join(f"order: {o}" for o in perm)
    return Layer("Permute", _caffe_kind("Permute", f"permute_param {{ {order} }}"), [x])


def _layer_norm(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    """LayerNormalization (opset 17 on) over the axes from `axis` on. Its scale and bias are
    learned unless they are the constants ones and zeros that an exporter writes for a LayerNorm
    without them (`elementwise_affine=False`, `bias=False`)."""
    x = node.input[0]
    shape = env.shape(x)
    axis = int(a.get("axis", -1)) % len(shape)
    if axis == 0:
        raise Unsupported("normalising over the batch axis (axis=0)")
    span = tuple(shape[axis:])
    scale = _f32(_need_const(env, node, 1, "scale"))
    bias = _opt_const(env, node, 2, "bias")
    for what, v in (("scale", scale), ("bias", bias)):
        if v is not None and v.size != math.prod(span):
            raise Unsupported(f"a {what} of shape {list(v.shape)} for the normalised axes "
                              f"{list(span)}")
    has_bias = bias is not None and (env.learned(node.input[2]) or bool(np.any(bias != 0)))
    affine = has_bias or env.learned(node.input[1]) or bool(np.any(scale != 1))
    weights = {"weight": scale.reshape(span)} if affine else {}
    if has_bias:
        weights["bias"] = _f32(bias).reshape(span)
    attrs = {"axis": axis, "eps": float(a.get("epsilon", 1e-5)), "affine": affine,
             "bias": has_bias}
    return Layer("LayerNorm", attrs, [x], weights, tuple(node.input[1:3]) if affine else ())


def _resize(env: Env, node: Any, a: dict[str, Any]) -> Layer:
    x = node.input[0]
    shape = _four_d(env, x, node.op_type)
    mode = a.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if node.op_type == "Upsample":
        scales = _need_const(env, node, 1, "scales") if _input(node, 1) else \
            np.asarray(a.get("scales", []))
        sizes = None
    else:
        scales = _opt_const(env, node, 2, "scales")
        sizes = _opt_const(env, node, 3, "sizes")
    if sizes is not None and sizes.size:
        factors = [s / d for s, d in zip(sizes.reshape(-1), shape)]
    elif scales is not None and scales.size:
        factors = [float(s) for s in scales.reshape(-1)]
    else:
        raise Unsupported("neither scales nor sizes given")
    if len(factors) != 4 or factors[:2] != [1.0, 1.0] or factors[2] != factors[3] or \
            factors[2] != int(factors[2]) or mode != "nearest":
        raise Unsupported(f"mode={mode}, factors {factors} (only nearest, by a whole factor "
                          "on H and W alike)")
    attrs = _caffe_kind("Upsample", f"upsample_param {{ scale: {int(factors[2])} }}")
    return Layer("Upsample", attrs, [x])


RULES: dict[str, Rule] = {
    "Conv": _conv, "ConvTranspose": _conv, "BatchNormalization": _batchnorm,
    "Relu": _simple("ReLU", {"negative_slope": 0.0}), "LeakyRelu": _leaky, "Clip": _clip,
    "PRelu": _prelu, "Sigmoid": _simple("Sigmoid"), "Tanh": _simple("TanH"),
    "HardSigmoid": _hardsigmoid, "HardSwish": _simple("Hardswish"), "Gelu": _gelu,
    "Elu": _elu, "Erf": _erf, "Split": _split, "Slice": _slice,
    "Softmax": _softmax, "Dropout": _dropout,
    "Add": _arith, "Sub": _arith, "Mul": _arith, "Div": _arith,
    "Gemm": _gemm, "MatMul": _matmul, "Concat": _concat, "MaxPool": _pool, "AveragePool": _pool,
    "GlobalAveragePool": _global("ave"), "GlobalMaxPool": _global("max"),
    "ReduceMean": _reduce("ave"), "ReduceMax": _reduce("max"), "Pad": _pad,
    "Flatten": _flatten, "Reshape": _reshape, "Squeeze": _squeeze, "Unsqueeze": _squeeze,
    "Transpose": _transpose, "LayerNormalization": _layer_norm, "Pow": _pow, "Sqrt": _sqrt,
    "Neg": _neg,
    "Resize": _resize, "Upsample": _resize,
    "Identity": lambda env, node, a: Alias(node.input[0]),
}
