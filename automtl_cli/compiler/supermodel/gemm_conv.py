"""T task convolutions whose weight gradient is one batched matrix product over im2col columns.

Under bf16 autocast on this CPU, oneDNN's weight gradient of the deep layers' grouped
convolution (3 tasks × 512 channels at 9×9, dilated) runs no faster than in float32 (23 against
27 ms, 2 threads), while a bf16 matrix product of the same arithmetic runs 2–3× faster. So for
the layers `conv_mode` sends here the forward and the input gradient stay oneDNN's, and the
weight gradient is the product of each task's output gradient [O, N·Ho·Wo] with its input
columns [N·Ho·Wo, C·kh·kw], gathered by one strided copy of the padded input (no `F.unfold`,
which is slower than the product). The result is the weight gradient oneDNN computes, to
rounding (`test_task_convolutions_with_a_gemm_weight_gradient` in `tests/test_supermodel.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["task_conv_gemm"]


def _columns(x: torch.Tensor, tasks: int, kernel: tuple[int, int], stride: tuple[int, int],
             padding: tuple[int, int], dilation: tuple[int, int], out_hw: tuple[int, int]
             ) -> torch.Tensor:
    """[T, C·kh·kw, N·Ho·Wo]: every task's input patches, one strided copy."""
    n, tc = x.shape[:2]
    c = tc // tasks
    xp = F.pad(x, (padding[1], padding[1], padding[0], padding[0])) if any(padding) else x
    sn, sc, sh, sw = xp.stride()
    view = xp.as_strided(
        (tasks, c, kernel[0], kernel[1], n, out_hw[0], out_hw[1]),
        (c * sc, sc, dilation[0] * sh, dilation[1] * sw, sn, stride[0] * sh, stride[1] * sw),
        xp.storage_offset())
    return view.reshape(tasks, c * kernel[0] * kernel[1], n * out_hw[0] * out_hw[1])


class _TaskConvGemm(torch.autograd.Function):
    """F.conv2d(x, weight, bias, groups=T) with the weight gradient by batched GEMM."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                tasks: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, tasks)
        return F.conv2d(x, weight, bias, stride, padding, dilation, tasks).contiguous()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, tasks = ctx.conf
        grad = grad.contiguous()
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(
                grad, x, weight, None, stride, padding, dilation, False, (0, 0), tasks,
                (True, False, False))[0]
        if ctx.needs_input_grad[1]:
            n, to, ho, wo = grad.shape
            cols = _columns(x, tasks, weight.shape[2:], stride, padding, dilation, (ho, wo))
            g = grad.view(n, tasks, to // tasks, ho * wo).permute(1, 2, 0, 3).reshape(
                tasks, to // tasks, n * ho * wo)
            gw = torch.bmm(g, cols.transpose(1, 2)).view(weight.shape)
        if ctx.needs_input_grad[2]:  # False without a bias
            gb = grad.sum((0, 2, 3))
        return gx, gw, gb, None, None, None, None


def task_conv_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   stride: tuple[int, int], padding: tuple[int, int],
                   dilation: tuple[int, int], tasks: int) -> torch.Tensor:
    """The grouped convolution of T tasks (plain within each task), in the dtype autocast
    gives the convolution (float64 stays, as under autocast), its weight gradient by GEMM."""
    if weight.shape[1] * tasks != x.shape[1]:
        raise ValueError("task_conv_gemm: a plain convolution per task only (groups == 1)")
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)

        def cast(v: torch.Tensor) -> torch.Tensor:
            return v if v.dtype == torch.float64 else v.to(dtype)

        x, weight = cast(x), cast(weight)
        bias = cast(bias) if bias is not None else None
    with torch.autocast(x.device.type, enabled=False):
        return _TaskConvGemm.apply(x, weight, bias, tuple(stride), tuple(padding),
                                   tuple(dilation), tasks)
