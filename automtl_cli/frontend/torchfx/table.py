"""The torch op table: which `nn.Module` classes, functions and tensor methods become which layer
kinds of `automtl_cli.frontend.ops`, with which attributes.

Modules are looked up by their exact class (a subclass may override `forward`); functions by
identity, so `F.relu`, `torch.relu` and `x.relu()` are three entries for one kind. A rule returns
a `Layer` (a kind, its attributes and the tensor inputs), an `fx.Node` (an op that passes its
input through: Identity, `x.contiguous()`), or raises `Unsupported` with the reason when an
argument takes a value the kind cannot express (`padding_mode="reflect"`).

A rule sees its node through a `Ctx`: torch's own shapes of every tensor (at batch 1, from the
forward pass the trace makes), the values of the shape arithmetic a model does (`x.size(0)`,
`c // groups`: evaluated, since shapes are static), and which operands are the module's
parameters (a layer scale `self.gamma`, `F.layer_norm`'s weight), which become the layer's
weights (`Layer.weights`). Shape ops (view, reshape, permute, chunk) are read from the shapes
torch computes, so `x.view(x.size(0), -1)` and `x.flatten(1)` are the same Flatten.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from automtl_cli.frontend.ops import Attrs, Shape

__all__ = ["Ctx", "Layer", "Unsupported", "map_node", "op_name"]


_NOT_IN_TABLE = ("no layer kind for this op (the README's \"PyTorch modules\" lists the "
                 "supported ones)")


class Unsupported(Exception):
    """An op outside the table, or an argument its kind cannot express (the message says which)."""


@dataclass(frozen=True)
class Layer:
    type: str
    attrs: Attrs
    inputs: tuple[fx.Node, ...]
    # the layer module's state key (its last name) → the traced module's parameter it takes
    weights: dict[str, str] = field(default_factory=dict)
    take: int | None = None  # the node is this one top of the layer's (`x[:, a:b]` of a Slice)


@dataclass
class Ctx:
    """What a rule may know besides the node: torch's shapes, static values, parameters."""

    node: fx.Node
    shape_of: Callable[[fx.Node], Shape | None]  # a tensor's shape at batch 1; None otherwise
    out: Any  # this node's shape (a tuple), or a list of shapes when it gives several tensors
    batch_kept: bool  # the output's axis 0 is the batch (checked at two batch sizes)
    static: Callable[[Any], Any]  # an argument's value (shape arithmetic evaluated)
    param_of: Callable[[Any], str | None]  # the parameter an operand is (its qualified name)

    def is_tensor(self, a: Any) -> bool:
        """An activation: a tensor node that is not one of the module's parameters."""
        return isinstance(a, fx.Node) and self.shape_of(a) is not None and self.param_of(a) is None


Rule = Callable[[fx.Node, Ctx], "Layer | fx.Node"]


def op_name(node: fx.Node, module: nn.Module | None) -> str:
    """How an error names the op: `call_function torch.nn.functional.interpolate`."""
    if node.op == "call_module":
        cls = type(module)
        public = getattr(nn, cls.__name__, None) is cls
        return f"call_module {'torch.nn' if public else cls.__module__}.{cls.__qualname__}"
    if node.op == "call_function":
        t = node.target
        module_name = getattr(t, "__module__", None) or ""
        if module_name == "_operator":
            module_name = "operator"
        elif getattr(F, getattr(t, "__name__", ""), None) is t:
            module_name = "torch.nn.functional"
        elif getattr(torch, getattr(t, "__name__", ""), None) is t:
            module_name = "torch"
        return f"call_function {module_name}.{getattr(t, '__name__', t)}"
    return f"{node.op} {node.target}"


def _arg(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _bind(node: fx.Node, ctx: Ctx, names: tuple[str, ...], defaults: dict[str, Any],
          ignored: tuple[str, ...] = ("inplace",)) -> dict[str, Any]:
    """The arguments after the first (the input) by name, static values resolved; an argument
    the rule does not read is refused rather than ignored."""
    extra = [k for k in node.kwargs if k not in names and k not in ignored]
    if len(node.args) > 1 + len(names):
        extra.append(f"{len(node.args) - 1 - len(names)} more positional")
    if extra:
        raise Unsupported(f"argument(s) {', '.join(map(str, extra))} not supported")
    return {name: ctx.static(_arg(node, i + 1, name, defaults.get(name)))
            for i, name in enumerate(names)}


def _input(node: fx.Node, ctx: Ctx) -> fx.Node:
    x = node.args[0] if node.args else next(iter(node.kwargs.values()), None)
    if not ctx.is_tensor(x):
        raise Unsupported("a tensor input expected (a constant or parameter operand has no "
                          "layer here)")
    return x


def _only_tensor_args(node: fx.Node, ctx: Ctx, count: int, options: tuple[str, ...] = ()
                      ) -> tuple[fx.Node, ...]:
    """The first `count` arguments, which must be activations; any others must be `options`
    (read by the rule), so an argument the rule would ignore is refused instead."""
    tensors = tuple(node.args[:count])
    if len(tensors) != count or not all(ctx.is_tensor(a) for a in tensors):
        raise Unsupported(f"{count} tensor operand(s) expected (a constant operand has no layer)")
    extra = [k for k in node.kwargs if k not in options]
    if len(node.args) > count + len(options):
        extra.append(f"{len(node.args) - count} positional")
    if extra:
        raise Unsupported(f"argument(s) {', '.join(extra)} not supported")
    return tensors


def _pair(v: int | tuple[int, ...] | list[int]) -> list[int]:
    if isinstance(v, int):
        return [int(v), int(v)]
    v = [int(x) for x in v]
    return v * 2 if len(v) == 1 else v


# --------------------------------------------------------------------------- geometry rules

def _conv_geometry(m: nn.Conv2d | nn.ConvTranspose2d) -> Attrs:
    if m.padding_mode != "zeros":
        raise Unsupported(f"padding_mode={m.padding_mode!r} (only zeros)")
    kernel, dilation = _pair(m.kernel_size), _pair(m.dilation)
    if m.padding == "valid":
        pad = [0, 0]
    elif m.padding == "same":
        extents = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if any(e % 2 for e in extents):
            raise Unsupported("padding='same' with an even window pads unevenly")
        pad = [e // 2 for e in extents]
    else:
        pad = _pair(m.padding)
    return {"num_output": m.out_channels, "kernel": kernel, "stride": _pair(m.stride),
            "pad": pad, "dilation": dilation, "group": m.groups, "bias": m.bias is not None}


def _deconv(m: nn.ConvTranspose2d, ctx: Ctx) -> Attrs:
    if any(_pair(m.output_padding)):
        raise Unsupported(f"output_padding={tuple(m.output_padding)} (Deconvolution has none; "
                          "crop or pad explicitly)")
    return _conv_geometry(m)


def _batchnorm(m: nn.BatchNorm2d, ctx: Ctx) -> Attrs:
    if m.momentum is None:
        raise Unsupported("momentum=None (a cumulative average) has no layer form")
    return {"eps": float(m.eps), "momentum": float(m.momentum), "affine": m.affine,
            "bias": m.affine, "track_running_stats": m.track_running_stats}


def _window(method: str, kernel: Any, stride: Any, pad: Any, ceil: bool, *, dilation: Any = 1,
            indices: bool = False, include_pad: bool = True, divisor: Any = None) -> Attrs:
    """Pooling with a window: torch's arguments checked against what the kind expresses;
    `return_indices` is the MAX Pooling's mask top (SegNet's unpooling reads it)."""
    if _pair(dilation) != [1, 1]:
        raise Unsupported("dilation is not supported")
    pad = _pair(pad)
    if divisor is not None:
        raise Unsupported("divisor_override is not supported")
    if not include_pad and any(pad):
        raise Unsupported("count_include_pad=False with padding (the AVE window counts its "
                          "padding)")
    attrs = {"method": method, "ceil": bool(ceil), "global": False, "kernel": _pair(kernel),
             "pad": pad, "stride": _pair(stride if stride not in (None, [], ()) else kernel)}
    return {**attrs, "mask": True} if indices else attrs


def _unpool(x: fx.Node, indices: Any, ctx: Ctx) -> Layer:
    """`nn.MaxUnpool2d` / `F.max_unpool2d` by a MAX pooling's indices: SegNet's Upsample with a
    mask, to torch's output size."""
    if not ctx.is_tensor(indices):
        raise Unsupported("the indices must be a MAX pooling's (return_indices=True)")
    (_, _, h, w), (_, _, oh, ow) = ctx.shape_of(x), ctx.out
    scale = [max(1, -(-oh // h)), max(1, -(-ow // w))]
    return Layer("Upsample", {"scale": scale, "size": [oh, ow], "pad_out": [False, False],
                              "mask": True}, (x, indices))


def _clamp_layer(x: fx.Node, low: Any, high: Any) -> Layer:
    """clamp / hardtanh to [0, ∞) or [0, 6]: ReLU and ReLU6; other bounds have no kind."""
    if low == 0 and high is None:
        return Layer("ReLU", {"negative_slope": 0.0}, (x,))
    if low == 0 and high == 6:
        return Layer("ReLU6", {}, (x,))
    raise Unsupported(f"bounds [{low}, {high}] (only [0, ∞): ReLU, and [0, 6]: ReLU6)")


def _pool_module(m: nn.MaxPool2d | nn.AvgPool2d, ctx: Ctx) -> Attrs:
    if isinstance(m, nn.MaxPool2d):
        return _window("max", m.kernel_size, m.stride, m.padding, m.ceil_mode,
                       dilation=m.dilation, indices=m.return_indices)
    return _window("ave", m.kernel_size, m.stride, m.padding, m.ceil_mode,
                   include_pad=m.count_include_pad, divisor=m.divisor_override)


def _adaptive_layer(method: str, x: fx.Node, ctx: Ctx) -> Layer:
    """Adaptive pooling at static shapes: global (output 1), a window of in/out when the output
    divides the input, or (output a multiple of the input) each value repeated, which is what
    torch's bins of one value give: `nn.AdaptiveAvgPool2d((7, 7))` after a 1×1 map."""
    (_, _, h, w), (_, _, oh, ow) = ctx.shape_of(x), ctx.out
    if (oh, ow) == (1, 1):
        return Layer("Pooling", {"method": method, "ceil": False, "global": True}, (x,))
    if h % oh == 0 and w % ow == 0:
        k = [h // oh, w // ow]
        return Layer("Pooling", {"method": method, "ceil": False, "global": False, "kernel": k,
                                 "pad": [0, 0], "stride": k}, (x,))
    if oh % h == 0 and ow % w == 0:
        return Layer("Upsample", {"scale": [oh // h, ow // w], "size": None,
                                  "pad_out": [False, False], "mask": False}, (x,))
    raise Unsupported(f"adaptive pooling from {h}x{w} to {oh}x{ow}: neither size divides the "
                      "other (the bins overlap unevenly)")


def _gelu(approximate: str) -> Attrs:
    if approximate != "none":
        raise Unsupported(f"approximate={approximate!r} (only the exact GELU)")
    return {}


def _dropout(p: float) -> Attrs:
    if not 0.0 <= p < 1.0:
        raise Unsupported(f"p={p} (must be in [0, 1))")
    return {"ratio": float(p)}


def _layer_norm(x: fx.Node, ctx: Ctx, shape: Any, eps: float, affine: bool, bias: bool
                ) -> Attrs:
    shape = [shape] if isinstance(shape, int) else list(shape)
    rank = len(ctx.shape_of(x))
    if not shape or len(shape) >= rank:
        raise Unsupported(f"normalized_shape {shape} leaves no batch axis")
    return {"axis": rank - len(shape), "eps": float(eps), "affine": bool(affine),
            "bias": bool(affine and bias)}


def _spatial_size_of(size: Any, ctx: Ctx) -> fx.Node | None:
    """The tensor whose height and width `size` reads (`skip.shape[-2:]`, `skip.size()[2:]`,
    `(skip.size(2), skip.size(3))`), so a resize to it follows that tensor at any input size."""
    def dims(a: Any) -> tuple[fx.Node, list[int]] | None:
        """(tensor, axes) for `t.shape[i]`, `t.shape[i:]`, `t.size(i)`, `t.size()[i]`."""
        if not isinstance(a, fx.Node):
            return None
        if a.op == "call_method" and a.target == "size" and len(a.args) == 2:
            return a.args[0], [a.args[1]]
        if a.op != "call_function" or a.target is not operator.getitem:
            return None
        whole, index = a.args
        if not isinstance(whole, fx.Node) or not (
                (whole.op == "call_method" and whole.target == "size" and len(whole.args) == 1)
                or (whole.op == "call_function" and whole.target is getattr
                    and whole.args[1] == "shape")):
            return None
        t = whole.args[0]
        rank = len(ctx.shape_of(t) or ())
        axes = list(range(rank))[index] if isinstance(index, slice) else [index]
        return t, [x % rank for x in axes] if rank else []

    parts = [dims(size)] if isinstance(size, fx.Node) else [dims(a) for a in size] \
        if isinstance(size, (tuple, list)) else [None]
    if None in parts:
        return None
    tensors = {t for t, _ in parts}
    axes = [x for _, ax in parts for x in ax]
    if len(tensors) != 1:
        return None
    (t,) = tensors
    ok = ctx.is_tensor(t) and len(ctx.shape_of(t)) == 4 and [x % 4 for x in axes] == [2, 3]
    return t if ok else None


def _resize(mode: str, align_corners: Any, x: fx.Node, ctx: Ctx, ref: fx.Node | None = None
            ) -> Layer:
    """Bilinear is DeepLab's Interp (to torch's output size; `align_corners` kept); nearest by
    an integer factor repeats each value (Upsample), as any mode does from a 1×1 map. Other
    modes have no kind."""
    if len(ctx.shape_of(x)) != 4:
        raise Unsupported("only 4-D (N, C, H, W) resizing")
    (_, _, h, w), (_, _, oh, ow) = ctx.shape_of(x), ctx.out
    if (h, w) == (1, 1) and mode in ("nearest", "bilinear", "bicubic"):  # every mode: a copy
        mode = "nearest"  # (DeepLabV3's image pooling, resized back to the map)
    corners = {} if align_corners or (h, w) == (1, 1) else {"align_corners": False}
    if ref is not None and mode in ("bilinear", "nearest") and (
            mode == "bilinear" or (h, w) == (1, 1)):  # to another tensor's size, as PSPNet's
        return Layer("Interp", {"zoom": None, "shrink": None, "height": None, "width": None,
                                "pad_beg": 0, "pad_end": 0, **corners}, (x, ref))
    if mode == "bilinear":
        return Layer("Interp", {"zoom": None, "shrink": None, "height": oh, "width": ow,
                                "pad_beg": 0, "pad_end": 0, **corners}, (x,))
    if mode == "nearest" and oh % h == 0 and ow % w == 0:
        return Layer("Upsample", {"scale": [oh // h, ow // w], "size": None,
                                  "pad_out": [False, False], "mask": False}, (x,))
    if mode == "nearest":
        raise Unsupported(f"nearest resizing from {h}x{w} to {oh}x{ow} (only by an integer "
                          "factor)")
    raise Unsupported(f"mode={mode!r} (only bilinear, and nearest by an integer factor)")


# --------------------------------------------------------------------------- modules

def _module_kind(kind: str, attrs: Callable[[Any, Ctx], Attrs]
                 ) -> Callable[[Any, fx.Node, Ctx], Layer]:
    def rule(m: nn.Module, x: fx.Node, ctx: Ctx) -> Layer:
        return Layer(kind, attrs(m, ctx), (x,))
    return rule


def _linear(m: nn.Linear, x: fx.Node, ctx: Ctx) -> Layer:
    """A matrix product over the last axis: InnerProduct from that axis, which is also the
    per-position Linear of a channels-last block (`[N, H, W, C]`, axis 3)."""
    return Layer("InnerProduct", {"num_output": m.out_features, "bias": m.bias is not None,
                                  "axis": len(ctx.shape_of(x)) - 1}, (x,))


def _layer_norm_module(m: nn.LayerNorm, x: fx.Node, ctx: Ctx) -> Layer:
    affine = m.elementwise_affine
    return Layer("LayerNorm", _layer_norm(x, ctx, m.normalized_shape, m.eps, affine,
                                          affine and m.bias is not None), (x,))


def _upsample_module(m: nn.Upsample, x: fx.Node, ctx: Ctx) -> Layer:
    if m.recompute_scale_factor:
        raise Unsupported("recompute_scale_factor=True")
    return _resize(m.mode, m.align_corners, x, ctx)


_MODULES: dict[type[nn.Module], Callable[[Any, fx.Node, Ctx], Layer]] = {
    nn.Conv2d: _module_kind("Convolution", lambda m, c: _conv_geometry(m)),
    nn.ConvTranspose2d: _module_kind("Deconvolution", _deconv),
    nn.BatchNorm2d: _module_kind("BatchNorm", _batchnorm),
    nn.ReLU: _module_kind("ReLU", lambda m, c: {"negative_slope": 0.0}),
    nn.LeakyReLU: _module_kind("ReLU", lambda m, c: {"negative_slope": float(m.negative_slope)}),
    nn.ReLU6: _module_kind("ReLU6", lambda m, c: {}),
    nn.Sigmoid: _module_kind("Sigmoid", lambda m, c: {}),
    nn.Tanh: _module_kind("TanH", lambda m, c: {}),
    nn.SiLU: _module_kind("SiLU", lambda m, c: {}),
    nn.GELU: _module_kind("GELU", lambda m, c: _gelu(m.approximate)),
    nn.Hardswish: _module_kind("Hardswish", lambda m, c: {}),
    nn.Hardsigmoid: _module_kind("Hardsigmoid", lambda m, c: {}),
    nn.Dropout: _module_kind("Dropout", lambda m, c: _dropout(m.p)),
    nn.MaxPool2d: _module_kind("Pooling", _pool_module),
    nn.AvgPool2d: _module_kind("Pooling", _pool_module),
    nn.AdaptiveAvgPool2d: lambda m, x, c: _adaptive_layer("ave", x, c),
    nn.AdaptiveMaxPool2d: lambda m, x, c: _adaptive_layer("max", x, c),
    nn.ELU: _module_kind("ELU", lambda m, c: {"alpha": float(m.alpha)}),
    nn.PReLU: _module_kind("PReLU", lambda m, c: {"channel_shared": m.num_parameters == 1,
                                                  "init": float(m.init)}),
    nn.ChannelShuffle: _module_kind("ShuffleChannel", lambda m, c: {"group": int(m.groups)}),
    nn.Linear: _linear,
    nn.LayerNorm: _layer_norm_module,
    nn.GroupNorm: _module_kind("GroupNorm", lambda m, c: {
        "group": int(m.num_groups), "eps": float(m.eps), "affine": bool(m.affine)}),
    nn.Upsample: _upsample_module,
    nn.Softmax: lambda m, x, c: Layer("Softmax", {"axis": _softmax_axis(m.dim, x, c)}, (x,)),
    nn.Hardtanh: lambda m, x, c: _clamp_layer(x, m.min_val, m.max_val),
    nn.UpsamplingNearest2d: _upsample_module,
    nn.UpsamplingBilinear2d: _upsample_module,
}


def _map_module(m: nn.Module, node: fx.Node, ctx: Ctx) -> Layer | fx.Node:
    if type(m) is nn.MaxUnpool2d:
        x, indices = _only_tensor_args(node, ctx, 2, ("output_size",))
        return _unpool(x, indices, ctx)
    (x,) = _only_tensor_args(node, ctx, 1)
    if type(m) is nn.Identity:
        return x
    if type(m) in (nn.Flatten, nn.Unflatten):
        return _reshape(node, ctx)
    rule = _MODULES.get(type(m))
    if rule is None:
        raise Unsupported(_NOT_IN_TABLE)
    return rule(m, x, ctx)


# --------------------------------------------------------------------------- functions, methods

def _pointwise(kind: str, attrs: Callable[[fx.Node, Ctx], Attrs] = lambda n, c: {},
               options: tuple[str, ...] = ("inplace",)) -> Rule:
    def rule(node: fx.Node, ctx: Ctx) -> Layer:
        (x,) = _only_tensor_args(node, ctx, 1, options)
        return Layer(kind, attrs(node, ctx), (x,))
    return rule


def _power(scale: float = 1.0, shift: float = 0.0, power: float = 1.0) -> Attrs:
    return {"power": float(power), "scale": float(scale), "shift": float(shift)}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _operand(ctx: Ctx, a: Any) -> tuple[str, Any]:
    """("tensor", node), ("param", node) or ("number", value) for an arithmetic operand."""
    if ctx.is_tensor(a):
        return "tensor", a
    if isinstance(a, fx.Node) and ctx.param_of(a) is not None:
        return "param", a
    v = ctx.static(a)
    if _is_number(v):
        return "number", float(v)
    raise Unsupported(f"an operand {type(v).__name__} ({v!r}) has no layer form")


def _param_layer(kind: str, x: fx.Node, p: fx.Node, ctx: Ctx) -> Layer:
    """`x * self.gamma` (Scale) or `x + self.beta` (Bias): the parameter lines up with `x`'s
    axes from `axis` (numpy broadcasting, size-1 axes around it broadcast) and becomes the
    layer's own learned blob."""
    xs, ps = ctx.shape_of(x), ctx.shape_of(p)
    if len(ps) > len(xs):
        raise Unsupported(f"a parameter {list(ps)} with more axes than the input {list(xs)}")
    aligned = (1,) * (len(xs) - len(ps)) + tuple(ps)
    span = [i for i, d in enumerate(aligned) if d != 1]
    first, last = (span[0], span[-1]) if span else (1, 0)
    if any(aligned[i] != xs[i] for i in range(first, last + 1)):
        raise Unsupported(f"a parameter {list(ps)} that broadcasts inside the input's axes "
                          f"{list(xs)}")
    if first == 0:
        raise Unsupported("a parameter along the batch axis")
    weight = "weight" if kind == "Scale" else "bias"
    attrs: Attrs = {"axis": first, "num_axes": last + 1 - first}
    if kind == "Scale":
        attrs = {"bias": False} if (first, last) == (1, 1) else {"bias": False, **attrs}
    return Layer(kind, attrs, (x,), {weight: ctx.param_of(p)})


def _arith(op: str) -> Rule:
    """`+ - * /` of two activations (Eltwise), an activation and a number (Power: scale and
    shift), or an activation and a parameter (Scale, Bias)."""
    def rule(node: fx.Node, ctx: Ctx) -> Layer:
        if len(node.args) != 2 or any(k != "alpha" for k in node.kwargs):
            raise Unsupported("two operands expected")
        alpha = ctx.static(node.kwargs.get("alpha", 1))
        if alpha != 1:
            raise Unsupported(f"alpha={alpha} is not supported")
        (ka, a), (kb, b) = _operand(ctx, node.args[0]), _operand(ctx, node.args[1])
        if ka == kb == "tensor":
            if op == "add":
                return Layer("Eltwise", {"operation": "sum", "coeff": None}, (a, b))
            if op == "sub":
                return Layer("Eltwise", {"operation": "sum", "coeff": [1.0, -1.0]}, (a, b))
            if op == "mul":
                return Layer("Eltwise", {"operation": "prod", "coeff": None}, (a, b))
            raise Unsupported("dividing by a tensor has no layer form")
        if "tensor" not in (ka, kb):
            raise Unsupported("no tensor operand")
        x, other, kind_other, first = (a, b, kb, True) if ka == "tensor" else (b, a, ka, False)
        if kind_other == "param":
            if op == "mul":
                return _param_layer("Scale", x, other, ctx)
            if op == "add":
                return _param_layer("Bias", x, other, ctx)
            raise Unsupported(f"{op} by a parameter has no layer form (only * and +)")
        c = other
        if op == "add":
            return Layer("Power", _power(shift=c), (x,))
        if op == "sub":
            return Layer("Power", _power(shift=-c) if first else _power(-1.0, c), (x,))
        if op == "mul":
            return Layer("Power", _power(scale=c), (x,))
        if not first or c == 0:
            raise Unsupported("dividing a number by a tensor has no layer form")
        return Layer("Power", _power(scale=1.0 / c), (x,))
    return rule


def _neg(node: fx.Node, ctx: Ctx) -> Layer:
    (x,) = _only_tensor_args(node, ctx, 1)
    return Layer("Power", _power(-1.0), (x,))


def _pow(node: fx.Node, ctx: Ctx) -> Layer:
    x, p = _input(node, ctx), ctx.static(_arg(node, 1, "exponent", None))
    if not _is_number(p):
        raise Unsupported("only a number exponent")
    return Layer("Power", _power(power=p), (x,))


def _cat(node: fx.Node, ctx: Ctx) -> Layer:
    tensors = _arg(node, 0, "tensors", ())
    if not tensors or not all(ctx.is_tensor(t) for t in tensors):
        raise Unsupported("a list of tensors expected")
    rank = len(ctx.shape_of(tensors[0]))
    dim = int(ctx.static(_arg(node, 1, "dim", 0)))
    if dim % rank == 0:
        raise Unsupported("concatenating along the batch axis (dim=0)")
    return Layer("Concat", {"axis": dim % rank}, tuple(tensors))


def _reshape(node: fx.Node, ctx: Ctx) -> Layer | fx.Node:
    """view / reshape / flatten / squeeze / unsqueeze, from the shapes torch computes: the batch
    axis must stay axis 0; merging neighbouring axes is a Flatten, anything else a Reshape that
    copies the batch axis (`dim: 0`) and fixes the others."""
    x = _input(node, ctx)
    s, out = ctx.shape_of(x), tuple(ctx.out)
    if not ctx.batch_kept:
        raise Unsupported(f"a reshape from {list(s)} to {list(out)} that moves values across "
                          "the batch axis")
    if out == tuple(s):
        return x
    for start in range(1, len(s)):
        for end in range(start + 1, len(s)):
            if out == (*s[:start], math.prod(s[start:end + 1]), *s[end + 1:]):
                return Layer("Flatten", {"axis": start,
                                         "end_axis": end if end < len(s) - 1 else -1}, (x,))
    return Layer("Reshape", {"shape": [0, *out[1:]], "axis": 0, "num_axes": -1}, (x,))


def _permute(node: fx.Node, ctx: Ctx) -> Layer | fx.Node:
    """permute / transpose / `.t()` with static axes (a channels-last block's
    `x.permute(0, 2, 3, 1)`); the batch axis must stay first."""
    x = _input(node, ctx)
    rank = len(ctx.shape_of(x))
    if node.target in ("transpose", torch.transpose, "swapaxes", torch.swapaxes):
        a, b = (int(ctx.static(_arg(node, i, n, None))) % rank
                for i, n in ((1, "dim0"), (2, "dim1")))
        order = list(range(rank))
        order[a], order[b] = order[b], order[a]
    else:
        dims = [ctx.static(a) for a in node.args[1:]] or [ctx.static(node.kwargs.get("dims"))]
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = list(dims[0])
        order = [int(d) % rank for d in dims]
    if order == list(range(rank)):
        return x
    if order[0] != 0:
        raise Unsupported(f"a permutation {order} that moves the batch axis")
    return Layer("Permute", {"order": order}, (x,))


def _pieces(node: fx.Node, ctx: Ctx) -> Layer:
    """chunk / split / tensor_split into pieces along one axis: a Slice with one top each."""
    x = _input(node, ctx)
    s, outs = ctx.shape_of(x), ctx.out
    if not isinstance(outs, list) or not outs:
        raise Unsupported("pieces of a tensor expected")
    rank = len(s)
    axes = [i for i in range(rank) if any(o[i] != s[i] for o in outs)] or [1]
    if len(axes) != 1 or axes[0] == 0:
        raise Unsupported("splitting along the batch axis, or along several")
    axis = axes[0]
    sizes = [o[axis] for o in outs]
    if sum(sizes) != s[axis]:
        raise Unsupported(f"pieces {sizes} that do not cover axis {axis} of size {s[axis]}")
    points = [sum(sizes[:i]) for i in range(1, len(sizes))]
    if len(set(sizes)) == 1:
        points = []
    return Layer("Slice", {"axis": axis, "points": points, "tops": len(sizes)}, (x,))


def _window_fn(method: str, indices: bool = False) -> Rule:
    """F.max_pool2d / F.avg_pool2d, their arguments as the modules take them (`return_indices`
    makes fx record F.max_pool2d_with_indices)."""
    def rule(node: fx.Node, ctx: Ctx) -> Layer:
        x = _input(node, ctx)
        if method == "max":
            a = _bind(node, ctx, ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                  "return_indices"),
                      {"padding": 0, "dilation": 1, "ceil_mode": False,
                       "return_indices": indices})
            attrs = _window("max", a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"],
                            dilation=a["dilation"], indices=a["return_indices"] or indices)
        else:
            a = _bind(node, ctx, ("kernel_size", "stride", "padding", "ceil_mode",
                                  "count_include_pad", "divisor_override"),
                      {"padding": 0, "ceil_mode": False, "count_include_pad": True})
            attrs = _window("ave", a["kernel_size"], a["stride"], a["padding"], a["ceil_mode"],
                            include_pad=a["count_include_pad"], divisor=a["divisor_override"])
        return Layer("Pooling", attrs, (x,))
    return rule


def _adaptive(method: str) -> Rule:
    def rule(node: fx.Node, ctx: Ctx) -> Layer:
        x = _input(node, ctx)
        _bind(node, ctx, ("output_size", "return_indices"), {"return_indices": False})
        return _adaptive_layer(method, x, ctx)
    return rule


def _mean(node: fx.Node, ctx: Ctx) -> Layer:
    """`x.mean((2, 3), keepdim=True)`: global average pooling; without keepdim, the mean over
    every axis from 2 on (Reduction MEAN, `[N, C]`, ShuffleNetV2's global pool)."""
    x = _input(node, ctx)
    a = _bind(node, ctx, ("dim", "keepdim"), {"keepdim": False}, ignored=())
    dims = a["dim"]
    rank = len(ctx.shape_of(x))
    dims = [dims] if isinstance(dims, int) else list(dims or ())
    if rank != 4 or sorted(d % 4 for d in dims) != [2, 3]:
        raise Unsupported("only a mean over the spatial axes (2, 3)")
    if a["keepdim"]:
        return Layer("Pooling", {"method": "ave", "ceil": False, "global": True}, (x,))
    return Layer("Reduction", {"operation": "mean", "axis": 2, "coeff": 1.0}, (x,))


def _relu_slope(node: fx.Node, ctx: Ctx) -> Attrs:
    return {"negative_slope": float(ctx.static(_arg(node, 1, "negative_slope", 0.01)))}


def _dropout_fn(node: fx.Node, ctx: Ctx) -> Layer:
    (x,) = _only_tensor_args(node, ctx, 1, ("p", "training", "inplace"))
    return Layer("Dropout", _dropout(float(ctx.static(_arg(node, 1, "p", 0.5)))), (x,))


def _layer_norm_fn(node: fx.Node, ctx: Ctx) -> Layer:
    """`F.layer_norm(x, shape, self.weight, self.bias, eps)` (LayerNorm2d's, with a permute on
    either side): the weight and bias must be the module's parameters."""
    x = _input(node, ctx)
    if len(node.args) > 5 or any(k not in ("normalized_shape", "weight", "bias", "eps")
                                 for k in node.kwargs):
        raise Unsupported("arguments beyond normalized_shape, weight, bias, eps")
    shape = ctx.static(_arg(node, 1, "normalized_shape", None))
    weight, bias = _arg(node, 2, "weight", None), _arg(node, 3, "bias", None)
    eps = ctx.static(_arg(node, 4, "eps", 1e-5))
    weights = {}
    for key, p in (("weight", weight), ("bias", bias)):
        if p is not None:
            if not isinstance(p, fx.Node) or ctx.param_of(p) is None:
                raise Unsupported(f"{key} must be a parameter of the module")
            weights[key] = ctx.param_of(p)
    if weight is None and bias is not None:
        raise Unsupported("a bias without a weight")
    return Layer("LayerNorm", _layer_norm(x, ctx, shape, eps, weight is not None,
                                          bias is not None), (x,), weights)


def _linear_fn(node: fx.Node, ctx: Ctx) -> Layer:
    """`F.linear(x, self.weight, self.bias)` (timm's Linear): InnerProduct over the last axis,
    the weights the module's parameters."""
    x = _input(node, ctx)
    if len(node.args) > 3 or any(k not in ("weight", "bias") for k in node.kwargs):
        raise Unsupported("arguments beyond weight, bias")
    weight, bias = _arg(node, 1, "weight", None), _arg(node, 2, "bias", None)
    names = {}
    for key, p in (("weight", weight), ("bias", bias)):
        if p is not None:
            if not isinstance(p, fx.Node) or ctx.param_of(p) is None:
                raise Unsupported(f"{key} must be a parameter of the module")
            names[key] = ctx.param_of(p)
    out_features, in_features = ctx.shape_of(weight)
    if ctx.shape_of(x)[-1] != in_features:
        raise Unsupported(f"weight {[out_features, in_features]} for input {ctx.shape_of(x)}")
    return Layer("InnerProduct", {"num_output": out_features, "bias": bias is not None,
                                  "axis": len(ctx.shape_of(x)) - 1}, (x,), names)


def _index(node: fx.Node, ctx: Ctx) -> Layer | fx.Node:
    """`x[:, a:b]` (any one axis after the batch cut, step 1): the middle top of a Slice."""
    x = node.args[0]
    if not ctx.is_tensor(x):
        raise Unsupported("indexing a tensor expected")
    s = ctx.shape_of(x)
    index = ctx.static(node.args[1])
    index = list(index) if isinstance(index, tuple) else [index]
    if Ellipsis in index:
        at = index.index(Ellipsis)
        index[at:at + 1] = [slice(None)] * (len(s) - len(index) + 1)
    if len(index) > len(s) or not all(isinstance(i, slice) for i in index):
        raise Unsupported("only slices (`x[:, a:b]`); an integer or tensor index has no layer")
    cut = [(axis, i.indices(s[axis])) for axis, i in enumerate(index)
           if i.indices(s[axis]) != (0, s[axis], 1)]
    if not cut:
        return x
    if len(cut) > 1 or cut[0][0] == 0 or cut[0][1][2] != 1 or cut[0][1][0] >= cut[0][1][1]:
        raise Unsupported("only a slice of one axis after the batch, with step 1")
    axis, (start, stop, _) = cut[0]
    points = [p for p in (start, stop) if 0 < p < s[axis]]
    return Layer("Slice", {"axis": axis, "points": points, "tops": len(points) + 1}, (x,),
                 take=1 if start > 0 else 0)


def _interpolate(node: fx.Node, ctx: Ctx) -> Layer:
    x = _input(node, ctx)
    a = _bind(node, ctx, ("size", "scale_factor", "mode", "align_corners",
                          "recompute_scale_factor", "antialias"),
              {"mode": "nearest", "antialias": False})
    if a["antialias"]:
        raise Unsupported("antialias=True")
    size = _arg(node, 1, "size", None)
    ref = _spatial_size_of(size, ctx) if size is not None else None
    return _resize(a["mode"], a["align_corners"], x, ctx, ref)


def _softmax_axis(dim: Any, x: fx.Node, ctx: Ctx) -> int:
    if dim is None:
        raise Unsupported("dim=None (the implicit axis is deprecated in torch); give dim")
    rank = len(ctx.shape_of(x))
    if int(dim) % rank == 0:
        raise Unsupported("softmax over the batch axis")
    return int(dim) % rank


def _softmax(node: fx.Node, ctx: Ctx) -> Layer:
    x = _input(node, ctx)
    a = _bind(node, ctx, ("dim", "_stacklevel", "dtype"), {"_stacklevel": 3}, ignored=())
    if a["dtype"] is not None:
        raise Unsupported("dtype is not supported")
    return Layer("Softmax", {"axis": _softmax_axis(a["dim"], x, ctx)}, (x,))


def _clamp(node: fx.Node, ctx: Ctx) -> Layer:
    x = _input(node, ctx)
    a = _bind(node, ctx, ("min", "max"), {}, ignored=())
    return _clamp_layer(x, a["min"], a["max"])


def _hardtanh(node: fx.Node, ctx: Ctx) -> Layer:
    x = _input(node, ctx)
    a = _bind(node, ctx, ("min_val", "max_val"), {"min_val": -1.0, "max_val": 1.0})
    return _clamp_layer(x, a["min_val"], a["max_val"])


def _unpool_fn(node: fx.Node, ctx: Ctx) -> Layer:
    x = _input(node, ctx)
    names = ("indices", "kernel_size", "stride", "padding", "output_size")
    if len(node.args) > 1 + len(names) or any(k not in names for k in node.kwargs):
        raise Unsupported("arguments beyond indices, kernel_size, stride, padding, output_size")
    return _unpool(x, _arg(node, 1, "indices", None), ctx)


def _identity(node: fx.Node, ctx: Ctx) -> fx.Node:
    (x,) = _only_tensor_args(node, ctx, 1, ("memory_format",))
    return x


_RELU = _pointwise("ReLU", lambda n, c: {"negative_slope": 0.0})
_SIGMOID, _TANH = _pointwise("Sigmoid"), _pointwise("TanH")
_ADD, _SUB, _MUL, _DIV = _arith("add"), _arith("sub"), _arith("mul"), _arith("div")
_ABS = _pointwise("AbsVal", options=())


_FUNCTIONS: dict[Any, Rule] = {
    operator.add: _ADD, operator.iadd: _ADD, torch.add: _ADD,
    operator.sub: _SUB, operator.isub: _SUB, torch.sub: _SUB, torch.subtract: _SUB,
    operator.mul: _MUL, operator.imul: _MUL, torch.mul: _MUL, torch.multiply: _MUL,
    operator.truediv: _DIV, operator.itruediv: _DIV, torch.div: _DIV, torch.true_divide: _DIV,
    operator.neg: _neg, torch.neg: _neg, operator.pow: _pow, torch.pow: _pow,
    torch.cat: _cat, torch.concat: _cat, torch.concatenate: _cat,
    torch.flatten: _reshape, torch.reshape: _reshape, torch.squeeze: _reshape,
    torch.unsqueeze: _reshape,
    torch.permute: _permute, torch.transpose: _permute, torch.swapaxes: _permute,
    torch.chunk: _pieces, torch.split: _pieces, torch.tensor_split: _pieces,
    torch.mean: _mean,
    F.relu: _RELU, torch.relu: _RELU, F.relu6: _pointwise("ReLU6"),
    F.leaky_relu: _pointwise("ReLU", _relu_slope, ("negative_slope", "inplace")),
    torch.sigmoid: _SIGMOID, F.sigmoid: _SIGMOID, torch.tanh: _TANH, F.tanh: _TANH,
    F.silu: _pointwise("SiLU"), F.hardswish: _pointwise("Hardswish"),
    F.hardsigmoid: _pointwise("Hardsigmoid"),
    F.gelu: _pointwise("GELU", lambda n, c: _gelu(c.static(_arg(n, 1, "approximate", "none"))),
                       ("approximate",)),
    F.dropout: _dropout_fn,
    torch.abs: _ABS,
    F.elu: _pointwise("ELU", lambda n, c: {"alpha": float(c.static(_arg(n, 1, "alpha", 1.0)))},
                      ("alpha", "inplace")),
    F.adaptive_avg_pool2d: _adaptive("ave"), F.adaptive_max_pool2d: _adaptive("max"),
    F.max_pool2d: _window_fn("max"), F.avg_pool2d: _window_fn("ave"),
    F.max_pool2d_with_indices: _window_fn("max", indices=True),
    F.layer_norm: _layer_norm_fn, F.interpolate: _interpolate, F.linear: _linear_fn,
    operator.getitem: _index,
    F.softmax: _softmax, torch.softmax: _softmax, torch.clamp: _clamp, torch.clip: _clamp,
    F.hardtanh: _hardtanh, F.max_unpool2d: _unpool_fn,
}
_METHODS: dict[str, Rule] = {
    "add": _ADD, "add_": _ADD, "sub": _SUB, "sub_": _SUB, "mul": _MUL, "mul_": _MUL,
    "div": _DIV, "div_": _DIV, "neg": _neg, "pow": _pow,
    "relu": _RELU, "relu_": _RELU, "sigmoid": _SIGMOID, "sigmoid_": _SIGMOID, "tanh": _TANH,
    "flatten": _reshape, "view": _reshape, "reshape": _reshape, "squeeze": _reshape,
    "unsqueeze": _reshape, "permute": _permute, "transpose": _permute, "swapaxes": _permute,
    "chunk": _pieces, "split": _pieces, "tensor_split": _pieces,
    "contiguous": _identity, "mean": _mean, "abs": _ABS, "softmax": _softmax,
    "clamp": _clamp, "clip": _clamp, "clamp_": _clamp,
}


def map_node(node: fx.Node, module: nn.Module | None, ctx: Ctx) -> Layer | fx.Node:
    """The layer an fx node becomes."""
    if node.op == "call_module":
        return _map_module(module, node, ctx)
    if node.op == "call_function" and node.target in _FUNCTIONS:
        return _FUNCTIONS[node.target](node, ctx)
    if node.op == "call_method" and node.target in _METHODS:
        return _METHODS[node.target](node, ctx)
    raise Unsupported(_NOT_IN_TABLE)
