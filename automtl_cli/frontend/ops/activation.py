"""Activations and other one-input, same-shape layers: ReLU (and leaky), ReLU6, Sigmoid, TanH,
SiLU, GELU, Hardswish, Hardsigmoid, Dropout, Softmax.

All but Softmax act on each value alone (`elementwise`), so the supermodel runs them on the tasks'
stacked activations without reshaping; Softmax normalises along an axis, which stacking changes.
SiLU, GELU (the exact, erf form), Hardswish and Hardsigmoid are not Caffe types: they come from
PyTorch trunks, and their prototxt form is a bare `layer { type: "SiLU" }`, which automtl reads
back (Caffe itself does not).
"""

from __future__ import annotations

from typing import ClassVar

from google.protobuf.message import Message
from torch import nn

from automtl_cli.frontend.ops.base import (
    Attrs,
    LayerKind,
    ReadContext,
    Shape,
    norm_axis,
    register_layer,
)

__all__ = ["GELU", "Dropout", "Hardsigmoid", "Hardswish", "ReLU", "ReLU6", "SiLU", "Sigmoid",
           "Softmax", "TanH"]


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
