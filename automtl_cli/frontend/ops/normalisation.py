"""Normalisation: BatchNorm, Scale and LRN, after Caffe's batch_norm, scale and lrn layers.

Caffe keeps a BatchNorm's statistics in the BatchNorm layer and its γ/β in a following Scale;
the AutoMTL dialect gives BatchNorm its own γ/β (`affine`). The front end folds the Caffe pair
into one affine BatchNorm node, and `BatchNorm.prototxt_layers` writes it back as the pair.
"""

from __future__ import annotations

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
    register_layer,
)

__all__ = ["LRN", "BatchNorm", "ChannelScale", "LocalResponseNorm", "Scale"]


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

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        if p is not None and (p.axis != 1 or p.num_axes != 1):
            raise ctx.fail("only a per-channel Scale (axis: 1, num_axes: 1) is supported",
                           self.param_field)
        return {"bias": bool(p.bias_term) if p is not None else False}

    def count_params(self, a: Attrs, shapes: list[Shape]) -> int:
        return shapes[0][1] * (2 if a["bias"] else 1)

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return ChannelScale(shapes[0][1], a["bias"])

    def param_text(self, a: Attrs) -> str:
        return f"bias_term: {str(a['bias']).lower()}"


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
