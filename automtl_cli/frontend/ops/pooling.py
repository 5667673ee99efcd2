"""Pooling (MAX, AVE, global), with output sizes after Caffe's pooling_layer.cpp.

Caffe rounds the output size up and the AutoMTL dialect down unless `round_mode: CEIL`; either
way the last window must start inside the input, as in Caffe and torch. A MAX pooling with two
tops also gives its argmax mask (`attrs["mask"]`), the index of each maximum in its input plane
(h·W + w), as Caffe does and torch's `return_indices`; SegNet's Upsample unpools by it. Caffe and
torch both keep the first of equal maxima.
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
    need_4d,
    read_pair,
    register_layer,
)

__all__ = ["GlobalPool", "Pooling"]


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
    tops = (1, 2)  # a second top: the argmax mask (MAX only), which SegNet's Upsample reads

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        path = self.param_field
        mask = len(layer.top) == 2
        if mask and (p is None or p.pool != p.MAX or p.global_pooling):
            raise ctx.fail(f'a second top ("{layer.top[1]}", the argmax mask) is only defined '
                           "for MAX pooling with a window", f"{path}.pool" if p else None)
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
        kernel = read_pair(p, "kernel_size", "kernel", None, ctx, path, minimum=1)
        pad = read_pair(p, "pad", "pad", 0, ctx, path)
        stride = read_pair(p, "stride", "stride", 1, ctx, path, minimum=1)
        for k, q in zip(kernel, pad):
            if 2 * q > k:
                raise ctx.fail(f"pad {q} is more than half the kernel {k}", f"{path}.pad")
        attrs.update(kernel=list(kernel), pad=list(pad), stride=list(stride))
        if mask:
            attrs["mask"] = True
        return attrs

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        need_4d(self.type, shapes[0])
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
        return [(n, c, *dims)] * (2 if a.get("mask") else 1)

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        if a["global"]:
            return GlobalPool(a["method"] == "max")
        if a["method"] == "max":
            return nn.MaxPool2d(tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pad"]),
                                ceil_mode=a["ceil"], return_indices=bool(a.get("mask")))
        return nn.AvgPool2d(tuple(a["kernel"]), tuple(a["stride"]), tuple(a["pad"]),
                            ceil_mode=a["ceil"], count_include_pad=True)

    def param_text(self, a: Attrs) -> str:
        method = "MAX" if a["method"] == "max" else "AVE"
        if a["global"]:
            return f"pool: {method} global_pooling: true"
        (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["pad"]
        return (f"pool: {method} kernel_h: {kh} kernel_w: {kw} stride_h: {sh} stride_w: {sw} "
                f"pad_h: {ph} pad_w: {pw} round_mode: {'CEIL' if a['ceil'] else 'FLOOR'}")
