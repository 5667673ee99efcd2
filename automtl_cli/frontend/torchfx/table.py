"""The torch op table: which `nn.Module` classes, functions and tensor methods become which layer
kinds of `automtl_cli.frontend.ops`, with which attributes.

Modules are looked up by their exact class (a subclass may override `forward`); functions by
identity, so `F.relu`, `torch.relu` and `x.relu()` are three entries for one kind. A rule returns
a `Layer` (a kind, its attributes and the tensor inputs), an `fx.Node` (an op that passes its
input through: Identity), or raises `Unsupported` with the reason when an argument takes a value
the kind cannot express (`padding_mode="reflect"`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from automtl_cli.frontend.ops import Attrs

__all__ = ["Layer", "Unsupported", "map_node", "op_name"]


_NOT_IN_TABLE = ("no layer kind for this op (the README's \"PyTorch modules\" lists the "
                 "supported ones)")


class Unsupported(Exception):
    """An op outside the table, or an argument its kind cannot express (the message says which)."""


@dataclass(frozen=True)
class Layer:
    type: str
    attrs: Attrs
    inputs: tuple[fx.Node, ...]


Rule = Callable[[fx.Node, int], "Layer | fx.Node"]  # (node, rank of its first input) → layer


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


def _only_tensor_args(node: fx.Node, count: int, options: tuple[str, ...] = ()
                      ) -> tuple[fx.Node, ...]:
    """The first `count` arguments, which must be tensors; any others must be `options` (read
    by the rule), so an argument the rule would ignore is refused instead."""
    tensors = tuple(node.args[:count])
    if len(tensors) != count or not all(isinstance(a, fx.Node) for a in tensors):
        raise Unsupported(f"{count} tensor operand(s) expected (a constant operand has no layer)")
    extra = [k for k in node.kwargs if k not in options]
    if len(node.args) > count + len(options):
        extra.append(f"{len(node.args) - count} positional")
    if extra:
        raise Unsupported(f"argument(s) {', '.join(extra)} not supported")
    return tensors


def _pair(v: int | tuple[int, ...]) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


# --------------------------------------------------------------------------- modules

def _conv(m: nn.Conv2d, node: fx.Node) -> Attrs:
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


def _batchnorm(m: nn.BatchNorm2d, node: fx.Node) -> Attrs:
    if m.momentum is None:
        raise Unsupported("momentum=None (a cumulative average) has no layer form")
    return {"eps": float(m.eps), "momentum": float(m.momentum), "affine": m.affine,
            "bias": m.affine, "track_running_stats": m.track_running_stats}


def _pool(m: nn.MaxPool2d | nn.AvgPool2d, node: fx.Node) -> Attrs:
    if isinstance(m, nn.MaxPool2d):
        if _pair(m.dilation) != [1, 1] or m.return_indices:
            raise Unsupported("dilation and return_indices are not supported")
        method = "max"
    else:
        if not m.count_include_pad or m.divisor_override is not None:
            raise Unsupported("only count_include_pad=True, divisor_override=None")
        method = "ave"
    return {"method": method, "ceil": bool(m.ceil_mode), "global": False,
            "kernel": _pair(m.kernel_size), "pad": _pair(m.padding),
            "stride": _pair(m.stride if m.stride is not None else m.kernel_size)}


def _global_pool(method: str, size: Any) -> Attrs:
    if size not in (1, (1, 1), [1, 1]):
        raise Unsupported(f"output size {size} (only 1: global pooling)")
    return {"method": method, "ceil": False, "global": True}


def _gelu(approximate: str) -> Attrs:
    if approximate != "none":
        raise Unsupported(f"approximate={approximate!r} (only the exact GELU)")
    return {}


def _dropout(p: float) -> Attrs:
    if not 0.0 <= p < 1.0:
        raise Unsupported(f"p={p} (must be in [0, 1))")
    return {"ratio": float(p)}


_MODULES: dict[type[nn.Module], tuple[str, Callable[[Any, fx.Node], Attrs]]] = {
    nn.Conv2d: ("Convolution", _conv),
    nn.BatchNorm2d: ("BatchNorm", _batchnorm),
    nn.ReLU: ("ReLU", lambda m, n: {"negative_slope": 0.0}),
    nn.LeakyReLU: ("ReLU", lambda m, n: {"negative_slope": float(m.negative_slope)}),
    nn.ReLU6: ("ReLU6", lambda m, n: {}),
    nn.Sigmoid: ("Sigmoid", lambda m, n: {}),
    nn.Tanh: ("TanH", lambda m, n: {}),
    nn.SiLU: ("SiLU", lambda m, n: {}),
    nn.GELU: ("GELU", lambda m, n: _gelu(m.approximate)),
    nn.Hardswish: ("Hardswish", lambda m, n: {}),
    nn.Hardsigmoid: ("Hardsigmoid", lambda m, n: {}),
    nn.Dropout: ("Dropout", lambda m, n: _dropout(m.p)),
    nn.MaxPool2d: ("Pooling", _pool),
    nn.AvgPool2d: ("Pooling", _pool),
    nn.AdaptiveAvgPool2d: ("Pooling", lambda m, n: _global_pool("ave", m.output_size)),
    nn.AdaptiveMaxPool2d: ("Pooling", lambda m, n: _global_pool("max", m.output_size)),
    nn.Flatten: ("Flatten", lambda m, n: _flatten_attrs(m.start_dim, m.end_dim)),
    nn.ELU: ("ELU", lambda m, n: {"alpha": float(m.alpha)}),
    nn.PReLU: ("PReLU", lambda m, n: {"channel_shared": m.num_parameters == 1,
                                      "init": float(m.init)}),
    nn.ChannelShuffle: ("ShuffleChannel", lambda m, n: {"group": int(m.groups)}),
}


def _map_module(m: nn.Module, node: fx.Node, rank: int) -> Layer | fx.Node:
    (x,) = _only_tensor_args(node, 1)
    if type(m) is nn.Identity:
        return x
    if type(m) is nn.Linear:
        return Layer("InnerProduct", {"num_output": m.out_features, "bias": m.bias is not None,
                                      "axis": rank - 1}, (x,))
    rule = _MODULES.get(type(m))
    if rule is None:
        raise Unsupported(_NOT_IN_TABLE)
    kind, attrs = rule
    return Layer(kind, attrs(m, node), (x,))


# --------------------------------------------------------------------------- functions, methods

def _flatten_attrs(start: int, end: int) -> Attrs:
    if start == 0:
        raise Unsupported("flattening the batch axis (start_dim=0)")
    return {"axis": int(start), "end_axis": int(end)}


def _pointwise(kind: str, attrs: Callable[[fx.Node], Attrs] = lambda n: {},
               options: tuple[str, ...] = ("inplace",)) -> Rule:
    def rule(node: fx.Node, rank: int) -> Layer:
        (x,) = _only_tensor_args(node, 1, options)
        return Layer(kind, attrs(node), (x,))
    return rule


def _eltwise(operation: str) -> Rule:
    def rule(node: fx.Node, rank: int) -> Layer:
        return Layer("Eltwise", {"operation": operation, "coeff": None},
                     _only_tensor_args(node, 2))
    return rule


def _cat(node: fx.Node, rank: int) -> Layer:
    tensors = _arg(node, 0, "tensors", ())
    if not tensors or not all(isinstance(t, fx.Node) for t in tensors):
        raise Unsupported("a list of tensors expected")
    dim = int(_arg(node, 1, "dim", 0))
    if dim % rank == 0:
        raise Unsupported("concatenating along the batch axis (dim=0)")
    return Layer("Concat", {"axis": dim % rank}, tuple(tensors))


def _flatten(node: fx.Node, rank: int) -> Layer:
    (x,) = _only_tensor_args(node, 1, ("start_dim", "end_dim"))
    start, end = _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
    return Layer("Flatten", _flatten_attrs(int(start), int(end)), (x,))


def _adaptive(method: str) -> Rule:
    def rule(node: fx.Node, rank: int) -> Layer:
        (x,) = _only_tensor_args(node, 1, ("output_size",))
        return Layer("Pooling", _global_pool(method, _arg(node, 1, "output_size", None)), (x,))
    return rule


def _mean(node: fx.Node, rank: int) -> Layer:
    """`x.mean((2, 3), keepdim=True)`: global average pooling."""
    (x,) = _only_tensor_args(node, 1, ("dim", "keepdim"))
    dims = _arg(node, 1, "dim", None)
    dims = [dims] if isinstance(dims, int) else list(dims or ())
    if rank != 4 or sorted(d % 4 for d in dims) != [2, 3] or not _arg(node, 2, "keepdim", False):
        raise Unsupported("only a mean over the spatial axes (2, 3) with keepdim=True")
    return Layer("Pooling", {"method": "ave", "ceil": False, "global": True}, (x,))


def _relu_slope(node: fx.Node) -> Attrs:
    return {"negative_slope": float(_arg(node, 1, "negative_slope", 0.01))}


def _dropout_fn(node: fx.Node, rank: int) -> Layer:
    (x,) = _only_tensor_args(node, 1, ("p", "training", "inplace"))
    return Layer("Dropout", _dropout(float(_arg(node, 1, "p", 0.5))), (x,))


_RELU = _pointwise("ReLU", lambda n: {"negative_slope": 0.0})
_SIGMOID, _TANH = _pointwise("Sigmoid"), _pointwise("TanH")
_FUNCTIONS: dict[Any, Rule] = {
    operator.add: _eltwise("sum"), operator.iadd: _eltwise("sum"), torch.add: _eltwise("sum"),
    operator.mul: _eltwise("prod"), operator.imul: _eltwise("prod"), torch.mul: _eltwise("prod"),
    torch.cat: _cat, torch.concat: _cat, torch.flatten: _flatten,
    F.relu: _RELU, torch.relu: _RELU, F.relu6: _pointwise("ReLU6"),
    F.leaky_relu: _pointwise("ReLU", _relu_slope, ("negative_slope", "inplace")),
    torch.sigmoid: _SIGMOID, F.sigmoid: _SIGMOID, torch.tanh: _TANH, F.tanh: _TANH,
    F.silu: _pointwise("SiLU"), F.hardswish: _pointwise("Hardswish"),
    F.hardsigmoid: _pointwise("Hardsigmoid"),
    F.gelu: _pointwise("GELU", lambda n: _gelu(_arg(n, 1, "approximate", "none")),
                       ("approximate",)),
    F.dropout: _dropout_fn,
    torch.abs: _pointwise("AbsVal", options=()),
    F.elu: _pointwise("ELU", lambda n: {"alpha": float(_arg(n, 1, "alpha", 1.0))},
                      ("alpha", "inplace")),
    F.adaptive_avg_pool2d: _adaptive("ave"), F.adaptive_max_pool2d: _adaptive("max"),
}
_METHODS: dict[str, Rule] = {
    "add": _eltwise("sum"), "add_": _eltwise("sum"), "mul": _eltwise("prod"),
    "mul_": _eltwise("prod"), "relu": _RELU, "relu_": _RELU, "sigmoid": _SIGMOID,
    "tanh": _TANH, "flatten": _flatten, "mean": _mean, "abs": _pointwise("AbsVal", options=()),
}


def map_node(node: fx.Node, module: nn.Module | None, rank: int) -> Layer | fx.Node:
    """The layer an fx node becomes (`rank`: its first input's number of axes)."""
    if node.op == "call_module":
        return _map_module(module, node, rank)
    if node.op == "call_function" and node.target in _FUNCTIONS:
        return _FUNCTIONS[node.target](node, rank)
    if node.op == "call_method" and node.target in _METHODS:
        return _METHODS[node.target](node, rank)
    raise Unsupported(_NOT_IN_TABLE)
