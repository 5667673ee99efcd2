"""The reference's augmentation and test-time resizing, on one sample dict of tensors.

Training splits (docs/method.md §7): random rescale by a factor in [min_scale, max_scale), a
horizontal flip with p = 0.5 (normal x is negated, which the reference does for Taskonomy only),
and a random crop; a sample smaller than the crop is first padded around its centre, with labels
padded as "no label" (seg 255, masks false). Test splits: a resize to the dataset's test size.
The image is interpolated bilinearly and labels by nearest neighbour, so classes never blend.
All randomness comes from the `rng` argument.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from automtl_cli.data.base import IGNORE_INDEX
from automtl_cli.experiment import TaskType

__all__ = ["augment", "resize_sample"]


CATEGORICAL = frozenset({TaskType.SEG})  # class-id labels: nearest resizing, padded with ignore


def _resize(name: str, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    if name == "image":
        return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
    if name in CATEGORICAL:
        return F.interpolate(x[None, None].float(), size=size, mode="nearest")[0, 0].long()
    if x.dtype == torch.bool:
        return F.interpolate(x[None].float(), size=size, mode="nearest")[0] > 0.5
    return F.interpolate(x[None], size=size, mode="nearest")[0]


def resize_sample(sample: dict[str, torch.Tensor], size: tuple[int, int]) -> dict:
    return {k: _resize(k, v, size) for k, v in sample.items()}


def _pad_value(name: str, x: torch.Tensor) -> float:
    if name in CATEGORICAL:
        return float(IGNORE_INDEX)
    return 0.0  # image (the mean after subtraction), masks (false), regression labels


def _pad_to(sample: dict, crop: tuple[int, int]) -> dict:
    h, w = next(iter(sample.values())).shape[-2:]
    ph, pw = max(crop[0] - h, 0), max(crop[1] - w, 0)
    if not ph and not pw:
        return sample
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    out = {}
    for k, v in sample.items():
        if v.dtype == torch.bool:
            out[k] = F.pad(v.float(), pad, value=0.0) > 0.5
        elif k in CATEGORICAL:
            out[k] = F.pad(v, pad, value=int(_pad_value(k, v)))
        else:
            out[k] = F.pad(v, pad, value=_pad_value(k, v))
    return out


def augment(sample: dict[str, torch.Tensor], rng: np.random.Generator, *,
            crop: tuple[int, int], min_scale: float, max_scale: float,
            flip: bool) -> dict[str, torch.Tensor]:
    """Random scale, flip and crop to `crop` (H, W), drawing scale, flip, offsets in that order."""
    h, w = sample["image"].shape[-2:]
    scale = float(rng.uniform(min_scale, max_scale)) if max_scale > min_scale else min_scale
    do_flip = bool(rng.uniform() < 0.5)
    size = (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)))
    sample = resize_sample(sample, size)
    if flip and do_flip:
        sample = {k: v.flip(-1) for k, v in sample.items()}
        if "normal" in sample:
            normal = sample["normal"].clone()
            normal[0] = -normal[0]
            sample["normal"] = normal
    sample = _pad_to(sample, crop)
    h, w = sample["image"].shape[-2:]
    top = int(rng.integers(0, h - crop[0] + 1))
    left = int(rng.integers(0, w - crop[1] + 1))
    return {k: v[..., top:top + crop[0], left:left + crop[1]].contiguous()
            for k, v in sample.items()}
