"""Activations and other one-input, same-shape layers: ReLU (and leaky), ReLU6, Sigmoid, TanH,
SiLU, GELU, Hardswish, Hardsigmoid, ELU, PReLU, AbsVal, BNLL, Power, Exp, Log, Dropout, Softmax.

All but Softmax and PReLU act on each value alone (`elementwise`), so the supermodel runs them on
the tasks' stacked activations without reshaping; Softmax normalises along an axis and PReLU's
slope is per channel, which stacking changes. Power, Exp and Log follow Caffe's power_layer.cpp,
exp_layer.cpp and log_layer.cpp: y = (shift + scale·x)^power, base^(shift + scale·x) and
log_base(shift + scale·x), a base of -1 meaning e.
SiLU, GELU (the exact, erf form), Hardswish and Hardsigmoid are not Caffe types: they come from
PyTorch trunks, and their prototxt form is a bare `layer { type: "SiLU" }`, which automtl reads
back (Caffe itself does not).
"""

from __future__ import annotations

import math
from typing import ClassVar

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

__all__ = ["BNLL", "ELU", "GELU", "AbsVal", "Affine", "Dropout", "Exp", "Hardsigmoid", "Hardswish",
           "Log", "PReLU", "Power", "ReLU", "ReLU6", "SiLU", "Sigmoid", "Softmax", "TanH"]


@register_layer
class ReLU(LayerKind):
    type = "ReLU"
    param_field = "relu_param"
    elementwise = True

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        return {"negative_slope": float(p.negative_slope) if p is not None else 0.0}

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        slope = a["negative_slope"]
        return nn.LeakyReLU(slope) if slope else nn.ReLU()

    def param_text(self, a: Attrs) -> str:
        return f"negative_slope: {a['negative_slope']!r}" if a["negative_slope"] else ""


class _Pointwise(LayerKind):
    """An activation without options: one torch module applied to each value."""

    elementwise = True
    module: ClassVar[type[nn.Module]]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return self.module()


def _pointwise(name: str, module: type[nn.Module], param_field: str | None = None
               ) -> type[LayerKind]:
    """Register the option-free activation kind `name`, which builds `module`."""
    return register_layer(type(name, (_Pointwise,), {
        "type": name, "module": module, "param_field": param_field,
        "__doc__": f"{name}: `torch.nn.{module.__name__}` on each value."}))


ReLU6 = _pointwise("ReLU6", nn.ReLU6)
Sigmoid = _pointwise("Sigmoid", nn.Sigmoid, "sigmoid_param")
TanH = _pointwise("TanH", nn.Tanh, "tanh_param")
SiLU = _pointwise("SiLU", nn.SiLU)
GELU = _pointwise("GELU", nn.GELU)  # the exact (erf) form, torch's default
Hardswish = _pointwise("Hardswish", nn.Hardswish)
Hardsigmoid = _pointwise("Hardsigmoid", nn.Hardsigmoid)


class AbsValue(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()


class Softplus(nn.Module):
    """Caffe's BNLL, log(1 + eˣ), written as Caffe writes it so that large x does not overflow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0) + torch.log1p(torch.exp(-x.abs()))


AbsVal = _pointwise("AbsVal", AbsValue)
BNLL = _pointwise("BNLL", Softplus)


@register_layer
class ELU(LayerKind):
    type = "ELU"
    param_field = "elu_param"
    elementwise = True

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        alpha = float(p.alpha) if p is not None else 1.0
        if not math.isfinite(alpha):
            raise ctx.fail(f"alpha must be finite, got {alpha}", "elu_param.alpha")
        return {"alpha": alpha}

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return nn.ELU(a["alpha"])

    def param_text(self, a: Attrs) -> str:
        return f"alpha: {a['alpha']!r}"


@register_layer
class PReLU(LayerKind):
    """A leaky ReLU whose slope is learned, one per channel or one for all (`channel_shared`).

    Caffe's default slope filler is the constant 0.25, as torch's."""

    type = "PReLU"
    param_field = "prelu_param"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        if p is not None and p.HasField("filler") and p.filler.type != "constant":
            raise ctx.fail(f'only a constant slope filler is supported, got "{p.filler.type}"',
                           "prelu_param.filler")
        init = float(p.filler.value) if p is not None and p.HasField("filler") else 0.25
        return {"channel_shared": bool(p.channel_shared) if p is not None else False,
                "init": init}

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        if len(shapes[0]) < 2:
            raise ShapeError(f"PReLU needs a channel axis, got {list(shapes[0])}")
        return [shapes[0]]

    def count_params(self, a: Attrs, shapes: list[Shape]) -> int:
        return 1 if a["channel_shared"] else shapes[0][1]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return nn.PReLU(self.count_params(a, shapes), a["init"])

    def param_text(self, a: Attrs) -> str:
        return (f"channel_shared: {str(a['channel_shared']).lower()} "
                f"filler {{ type: \"constant\" value: {a['init']!r} }}")

    def weight_names(self, a: Attrs, key: str) -> list[str] | None:
        return [f"{key}/slope"]


class Affine(nn.Module):
    """y = f(shift + scale·x) for Caffe's Power (f = ^power), Exp (f = base^) and Log (f = log)."""

    def __init__(self, function: str, scale: float, shift: float, value: float) -> None:
        super().__init__()
        self.function, self.scale, self.shift, self.value = function, scale, shift, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x * self.scale + self.shift if (self.scale, self.shift) != (1.0, 0.0) else x
        if self.function == "power":
            return z if self.value == 1.0 else z.pow(self.value)
        if self.function == "exp":  # value: ln(base)
            return torch.exp(z * self.value if self.value != 1.0 else z)
        return torch.log(z) / self.value if self.value != 1.0 else torch.log(z)


class _ScaledShifted(LayerKind):
    """Power, Exp and Log: a function of shift + scale·x, with one more field (power or base)."""

    elementwise = True
    extra: ClassVar[str]  # "power" or "base"
    default: ClassVar[float]

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        values = {self.extra: float(getattr(p, self.extra)) if p is not None else self.default,
                  "scale": float(p.scale) if p is not None else 1.0,
                  "shift": float(p.shift) if p is not None else 0.0}
        for name, v in values.items():
            if not math.isfinite(v):
                raise ctx.fail(f"{name} must be finite, got {v}", f"{self.param_field}.{name}")
        if self.extra == "base" and values["base"] != -1.0 and (
                values["base"] <= 0 or values["base"] == 1.0):
            raise ctx.fail(f"base must be positive and not 1 (or -1 for e), got "
                           f"{values['base']!r}", f"{self.param_field}.base")
        return values

    def param_text(self, a: Attrs) -> str:
        return f"{self.extra}: {a[self.extra]!r} scale: {a['scale']!r} shift: {a['shift']!r}"


def _log_base(base: float) -> float:
    return 1.0 if base == -1.0 else math.log(base)


@register_layer
class Power(_ScaledShifted):
    type = "Power"
    param_field = "power_param"
    extra, default = "power", 1.0

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return Affine("power", a["scale"], a["shift"], a["power"])


@register_layer
class Exp(_ScaledShifted):
    type = "Exp"
    param_field = "exp_param"
    extra, default = "base", -1.0

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return Affine("exp", a["scale"], a["shift"], _log_base(a["base"]))


@register_layer
class Log(_ScaledShifted):
    type = "Log"
    param_field = "log_param"
    extra, default = "base", -1.0

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return Affine("log", a["scale"], a["shift"], _log_base(a["base"]))


@register_layer
class Dropout(LayerKind):
    type = "Dropout"
    param_field = "dropout_param"
    elementwise = True

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        ratio = float(p.dropout_ratio) if p is not None else 0.5
        if not 0.0 <= ratio < 1.0:
            raise ctx.fail(f"dropout_ratio must be in [0, 1), got {ratio}",
                           "dropout_param.dropout_ratio")
        return {"ratio": ratio}

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return nn.Dropout(a["ratio"])

    def param_text(self, a: Attrs) -> str:
        return f"dropout_ratio: {a['ratio']!r}"


@register_layer
class Softmax(LayerKind):
    type = "Softmax"
    param_field = "softmax_param"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        return {"axis": int(p.axis) if p is not None else 1}

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        norm_axis(a["axis"], len(shapes[0]))
        return [shapes[0]]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return nn.Softmax(dim=norm_axis(a["axis"], len(shapes[0])))

    def param_text(self, a: Attrs) -> str:
        return f"axis: {a['axis']}"
