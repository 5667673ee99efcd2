"""Convolution and Deconvolution: output sizes follow Caffe's conv_layer.cpp and deconv_layer.cpp.

Convolution is the search space's unit: every one becomes a search node (shared, task-specific or
skip branch). Deconvolution (an upsampling in dense heads and FCN-style trunks) is not searched.
ConvolutionDepthwise, the MobileNet/ShuffleNet forks' type, becomes a Convolution with group =
channels, so it is searched like one and written back as one.
"""

from __future__ import annotations

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
    window_out,
)

__all__ = ["Convolution", "ConvolutionDepthwise", "Deconvolution"]


def weight_and_bias_names(key: str, bias: bool) -> list[str]:
    """`param { name }` entries for a layer with a weight blob and, maybe, a bias blob."""
    return [f"{key}/w"] + ([f"{key}/b"] if bias else [])


@register_layer
class Convolution(LayerKind):
    type = "Convolution"
    param_field = "convolution_param"
    searchable = True

    def read(self, layer: Message, ctx: ReadContext) -> Attrs:
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
            "kernel": list(read_pair(p, "kernel_size", "kernel", None, ctx, path, minimum=1)),
            "stride": list(read_pair(p, "stride", "stride", 1, ctx, path, minimum=1)),
            "pad": list(read_pair(p, "pad", "pad", 0, ctx, path)),
            "dilation": list(read_pair(p, "dilation", None, 1, ctx, path, minimum=1)),
            "group": int(p.group),
            "bias": bool(p.bias_term),
        }

    def _check_groups(self, a: Attrs, cin: int) -> None:
        g = a["group"]
        if cin % g:
            raise ShapeError(f"group {g} does not divide the {cin} input channels")
        if a["num_output"] % g:
            raise ShapeError(f"group {g} does not divide num_output {a['num_output']}")

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        need_4d(self.type, shapes[0])
        n, cin, h, w = shapes[0]
        self._check_groups(a, cin)
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = a["kernel"], a["stride"], a["pad"], a["dilation"]
        for size, k, p, d, axis in ((h, kh, ph, dh, "height"), (w, kw, pw, dw, "width")):
            if size + 2 * p < d * (k - 1) + 1:
                raise ShapeError(f"the {d * (k - 1) + 1}-wide window is larger than the padded "
                                 f"input {axis} {size}+2*{p}")
        return [(n, a["num_output"], window_out(h, kh, ph, sh, dh),
                 window_out(w, kw, pw, sw, dw))]

    def count_params(self, a: Attrs, shapes: list[Shape]) -> int:
        cin = shapes[0][1]
        kh, kw = a["kernel"]
        bias = a["num_output"] if a["bias"] else 0
        return a["num_output"] * (cin // a["group"]) * kh * kw + bias

    def flops(self, a: Attrs, in_shapes: list[Shape], out_shapes: list[Shape]) -> int:
        _, cout, ho, wo = out_shapes[0]
        kh, kw = a["kernel"]
        return 2 * cout * (in_shapes[0][1] // a["group"]) * kh * kw * ho * wo

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return nn.Conv2d(shapes[0][1], a["num_output"], tuple(a["kernel"]), tuple(a["stride"]),
                         tuple(a["pad"]), tuple(a["dilation"]), a["group"], a["bias"])

    def param_text(self, a: Attrs) -> str:
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = a["kernel"], a["stride"], a["pad"], a["dilation"]
        text = (f"num_output: {a['num_output']} bias_term: {str(a['bias']).lower()} "
                f"kernel_h: {kh} kernel_w: {kw} stride_h: {sh} stride_w: {sw} "
                f"pad_h: {ph} pad_w: {pw} group: {a['group']}")
        return text + (f" dilation: {dh}" if dh == dw else f" dilation: {dh} dilation: {dw}")

    def weight_names(self, a: Attrs, key: str) -> list[str] | None:
        return weight_and_bias_names(key, a["bias"])


@register_layer
class Deconvolution(Convolution):
    type = "Deconvolution"
    searchable = False

    def infer(self, a: Attrs, shapes: list[Shape]) -> list[Shape]:
        need_4d(self.type, shapes[0])
        n, cin, h, w = shapes[0]
        self._check_groups(a, cin)
        dims = []
        for size, k, s, p, d in zip((h, w), a["kernel"], a["stride"], a["pad"], a["dilation"]):
            out = s * (size - 1) + d * (k - 1) + 1 - 2 * p
            if out < 1:
                raise ShapeError(f"output size {out} is not positive (padding {p} too large)")
            dims.append(out)
        return [(n, a["num_output"], *dims)]

    def count_params(self, a: Attrs, shapes: list[Shape]) -> int:
        kh, kw = a["kernel"]
        cin = shapes[0][1]
        bias = a["num_output"] if a["bias"] else 0
        return cin * (a["num_output"] // a["group"]) * kh * kw + bias

    def flops(self, a: Attrs, in_shapes: list[Shape], out_shapes: list[Shape]) -> int:
        _, cin, h, w = in_shapes[0]
        kh, kw = a["kernel"]
        return 2 * cin * (out_shapes[0][1] // a["group"]) * kh * kw * h * w

    def build(self, a: Attrs, shapes: list[Shape]) -> nn.Module:
        return nn.ConvTranspose2d(shapes[0][1], a["num_output"], tuple(a["kernel"]),
                                  tuple(a["stride"]), tuple(a["pad"]), 0, a["group"], a["bias"],
                                  tuple(a["dilation"]))


_CONVOLUTION = Convolution()


@register_layer
class ConvolutionDepthwise(Convolution):
    """A depthwise convolution (group = the input channels; num_output a multiple of them)."""

    type = "ConvolutionDepthwise"
    aliases = ("DepthwiseConvolution",)
    fork = ("the MobileNet/ShuffleNet caffe forks' depthwise convolution "
            "(yonghenglh6/DepthwiseConvolution), read as a Convolution with group = channels")

    def lower(self, a: Attrs, shapes: list[Shape]) -> tuple[LayerKind, Attrs]:
        need_4d(self.type, shapes[0])
        cin = shapes[0][1]
        if a["group"] not in (1, cin):
            raise ShapeError(f"group {a['group']} is neither 1 nor the {cin} input channels of "
                             "a depthwise convolution")
        if a["num_output"] % cin:
            raise ShapeError(f"num_output {a['num_output']} is not a multiple of the {cin} input "
                             "channels of a depthwise convolution")
        return _CONVOLUTION, {**a, "group": cin}
