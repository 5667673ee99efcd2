"""`--precision`: the arithmetic of the forward passes of search, fine-tuning and evaluation.

`bf16` runs the forward passes under `torch.autocast(bfloat16)` (convolutions and matrix
products in bfloat16, reductions and the losses in float32) while the master weights, the
gradients they accumulate and the optimiser states stay float32. Backward passes run outside
the autocast region, in the dtypes the forward chose. The predictions leave the region as
float32, so losses and metrics are computed as they are in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from automtl_cli.choices import Precision

__all__ = ["Precision", "as_float", "autocast"]


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: Precision | str) -> Iterator[None]:
    """The forward region of `precision` on `device` (nothing at all for fp32)."""
    if Precision(precision) is Precision.FP32:
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        yield


def as_float(preds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Predictions as float32 (a no-op for float32 ones)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in preds.items()}
