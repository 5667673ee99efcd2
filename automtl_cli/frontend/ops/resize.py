"""Spatial resizing from caffe forks: DeepLab's Interp (bilinear, corners aligned) and the forks'
Upsample (nearest, by an integer scale).

automtl adds `align_corners: false` to Interp (`attrs["align_corners"]`, absent when true, as
DeepLab's): samples at pixel centres, as PyTorch's `F.interpolate(..., mode="bilinear")` does by
default and torchvision's FCN and DeepLabV3 heads use.

Interp follows DeepLab's interp_layer.cpp (deeplab-public-ver2): the input, cropped by `pad_beg`
and `pad_end` (0 or negative), is resized to a size given by `zoom_factor` (h + (h-1)(z-1)),
`shrink_factor` ((h-1)/s + 1), both (shrink, then zoom), `height`/`width`, or, as PSPNet's fork
adds, a second bottom's size; values are interpolated bilinearly with the corners aligned.
Upsample's size is `upsample_h`/`_w`, or the input's times `scale` (`scale_h`/`scale_w`) less
`pad_out_*` (caffe-segnet's fields). With two bottoms it is caffe-segnet's max-unpooling: the
second bottom is a MAX Pooling layer's mask top, and each value goes to its mask index in a zero
map (ENet, SegNet). With one bottom it repeats each value `scale` times along each spatial axis
(the YOLO forks' nearest form).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from google.protobuf.message import Message
from torch import nn

from automtl_cli.frontend.ops.base import (
    Attrs,
    LayerKind,
    ReadContext,
    Shape,
    ShapeError,
    need_4d,
    register_layer,
)

__all__ = ["Interp", "InterpModule", "MaxUnpool", "NearestUpsample", "Upsample", "interp_size"]


def interp_size(a: Attrs, h: int, w: int, ref: Shape | None) -> tuple[int, int]:
    """DeepLab's output size for an `h`×`w` input (before cropping) and its options."""
    h_eff, w_eff = h + a["pad_beg"] + a["pad_end"], w + a["pad_beg"] + a["pad_end"]
    if h_eff < 1 or w_eff < 1:
        raise ShapeError(f"pad_beg {a['pad_beg']} and pad_end {a['pad_end']} crop the {h}x{w} "
                         "input to nothing")
    zoom, shrink = a["zoom"], a["shrink"]
    if ref is not None:
        return ref[2], ref[3]
    if shrink is not None:
        h_eff, w_eff = (h_eff - 1) // shrink + 1, (w_eff - 1) // shrink + 1
    if zoom is not None:
        return h_eff + (h_eff - 1) * (zoom - 1), w_eff + (w_eff - 1) * (zoom - 1)
    if shrink is not None:
        return h_eff, w_eff
    return a["height"], a["width"]


class InterpModule(nn.Module):
    """Crop by the (non-positive) pads, then bilinear resizing with align_corners=True."""

    def __init__(self, attrs: Attrs) -> None:
        super().__init__()
        self.attrs = dict(attrs)

    def forward(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        a = self.attrs
        h, w = x.shape[2], x.shape[3]
        size = interp_size(a, h, w, tuple(ref.shape) if ref is not None else None)
        b, e = -a["pad_beg"], a["pad_end"]
        if b or e:
            x = x[:, :, b:h + e, b:w + e]
        return F.interpolate(x, size=size, mode="bilinear",
                             align_corners=a.get("align_corners", True))


@register_layer
class Interp(LayerKind):
    type = "Interp"
    param_field = "interp_param"
    bottoms = (1, 2)
    fork = "DeepLab's caffe fork (deeplab-public-ver2; a second bottom as in PSPNet's)"

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        path = self.param_field
        two = len(layer.bottom) == 2
        if p is None:
            if two:
                return {"zoom": None, "shrink": None, "height": None, "width": None,
                        "pad_beg": 0, "pad_end": 0}
            raise ctx.fail("interp_param is required (zoom_factor, shrink_factor, or height and "
                           "width)", None)
        attrs: Attrs = {
            "zoom": int(p.zoom_factor) if p.HasField("zoom_factor") else None,
            "shrink": int(p.shrink_factor) if p.HasField("shrink_factor") else None,
            "height": int(p.height) if p.HasField("height") else None,
            "width": int(p.width) if p.HasField("width") else None,
            "pad_beg": int(p.pad_beg), "pad_end": int(p.pad_end),
        }
        for name, field in (("zoom", "zoom_factor"), ("shrink", "shrink_factor")):
            if attrs[name] is not None and attrs[name] < 1:
                raise ctx.fail(f"{field} must be at least 1, got {attrs[name]}",
                               f"{path}.{field}")
        for name in ("pad_beg", "pad_end"):
            if attrs[name] > 0:
                raise ctx.fail(f"{name} must be 0 or negative (a crop), got {attrs[name]}",
                               f"{path}.{name}")
        sized = attrs["height"] is not None or attrs["width"] is not None
        if sized and (attrs["height"] is None or attrs["width"] is None
                      or min(attrs["height"], attrs["width"]) < 1):
            raise ctx.fail("height and width must be given together, both positive",
                           f"{path}.height" if p.HasField("height") else f"{path}.width")
        if not two and attrs["zoom"] is None and attrs["shrink"] is None and not sized:
            raise ctx.fail("give zoom_factor, shrink_factor, or height and width", path)
        if p.HasField("align_corners") and not p.align_corners:
            attrs["align_corners"] = False
        return attrs

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        need_4d(self.type, shapes[0])
        n, c, h, w = shapes[0]
        ref = None
        if len(shapes) == 2:
            need_4d(self.type, shapes[1])
            ref = shapes[1]
        return [(n, c, *interp_size(a, h, w, ref))]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return InterpModule(a)

    def param_text(self, a: Attrs) -> str:
        fields = [f"{field}: {a[name]}" for name, field in (
            ("zoom", "zoom_factor"), ("shrink", "shrink_factor"), ("height", "height"),
            ("width", "width")) if a[name] is not None]
        corners = [] if a.get("align_corners", True) else ["align_corners: false"]
        return " ".join([*fields, f"pad_beg: {a['pad_beg']}", f"pad_end: {a['pad_end']}",
                         *corners])


class NearestUpsample(nn.Module):
    """Each value repeated `scale` times along each spatial axis, cut to `size`."""

    def __init__(self, scale: tuple[int, int], size: tuple[int, int]) -> None:
        super().__init__()
        self.scale, self.size = scale, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (sh, sw), (oh, ow) = self.scale, self.size
        y = x.repeat_interleave(sh, 2).repeat_interleave(sw, 3)
        return y[:, :, :oh, :ow] if (oh, ow) != tuple(y.shape[2:]) else y


class MaxUnpool(nn.Module):
    """caffe-segnet's Upsample with a mask: each value written at its mask index (h·W + w) of a
    zero `size` plane. Where two values share an index (overlapping pooling windows), one is
    kept: the later one on a CPU, as in Caffe's loop; on a GPU the choice is not fixed."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        oh, ow = self.size
        out = x.new_zeros(n, c, oh * ow)
        out.scatter_(2, mask.reshape(n, c, -1).long(), x.reshape(n, c, -1))
        return out.view(n, c, oh, ow)


@register_layer
class Upsample(LayerKind):
    type = "Upsample"
    param_field = "upsample_param"
    bottoms = (1, 2)  # a second bottom: a Pooling layer's argmax mask (SegNet's unpooling)
    fork = ("a caffe fork's Upsample (SegNet's max-unpooling by a pooling mask, "
            "alexgkendall/caffe-segnet; with one bottom, the YOLO forks' nearest form)")

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
        p = self.params_of(layer)
        path = self.param_field
        mask = len(layer.bottom) == 2
        if p is None:
            return {"scale": [2, 2], "size": None, "pad_out": [False, False], "mask": mask}
        if p.HasField("scale_h") != p.HasField("scale_w") or (
                p.HasField("scale_h") and p.HasField("scale")):
            raise ctx.fail("give scale, or scale_h and scale_w together", f"{path}.scale_h"
                           if p.HasField("scale_h") else f"{path}.scale_w")
        if p.HasField("upsample_h") != p.HasField("upsample_w"):
            raise ctx.fail("upsample_h and upsample_w must be given together",
                           f"{path}.upsample_h" if p.HasField("upsample_h")
                           else f"{path}.upsample_w")
        scale = [int(p.scale_h), int(p.scale_w)] if p.HasField("scale_h") else [int(p.scale)] * 2
        if min(scale) < 1:
            raise ctx.fail(f"scale must be at least 1, got {scale[0]}x{scale[1]}",
                           f"{path}.scale_h" if p.HasField("scale_h") else f"{path}.scale")
        pad_out = [bool(p.pad_out_h), bool(p.pad_out_w)]
        for s, pad, axis in zip(scale, pad_out, "hw"):
            if pad and s != 2:
                raise ctx.fail(f"pad_out_{axis} needs a scale of 2, got {s}",
                               f"{path}.pad_out_{axis}")
        size = [int(p.upsample_h), int(p.upsample_w)] if p.HasField("upsample_h") else None
        if size is not None and min(size) < 1:
            raise ctx.fail(f"upsample_h and upsample_w must be positive, got {size}",
                           f"{path}.upsample_h")
        return {"scale": scale, "size": size, "pad_out": pad_out, "mask": mask}

    def out_size(self, a: Attrs, shape: Shape) -> tuple[int, int]:
        need_4d(self.type, shape)
        dims = []
        for i, (size, s) in enumerate(zip(shape[2:], a["scale"])):
            out = a["size"][i] if a["size"] is not None else size * s - int(a["pad_out"][i])
            if out > size * s and not a["mask"]:
                raise ShapeError(f"output size {out} is more than {s} x the input's {size}")
            dims.append(out)
        return dims[0], dims[1]

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        if a["mask"] and tuple(shapes[1]) != tuple(shapes[0]):
            raise ShapeError(f"the mask (bottom 2) {list(shapes[1])} must be shaped like the "
                             f"input {list(shapes[0])}")
        return [(*shapes[0][:2], *self.out_size(a, shapes[0]))]

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        if a["mask"]:
            return MaxUnpool(self.out_size(a, shapes[0]))
        return NearestUpsample(tuple(a["scale"]), self.out_size(a, shapes[0]))

    def param_text(self, a: Attrs) -> str:
        (sh, sw), (ph, pw) = a["scale"], a["pad_out"]
        text = f"scale_h: {sh} scale_w: {sw}"
        text += "".join(f" pad_out_{axis}: true" for axis, pad in (("h", ph), ("w", pw)) if pad)
        if a["size"] is not None:
            text += f" upsample_h: {a['size'][0]} upsample_w: {a['size'][1]}"
        return text
