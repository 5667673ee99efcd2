"""A picture of a dataset: one row per sample, the image and then each task's label beside it.

Drawn with Pillow alone. Seg uses a fixed palette (unlabelled pixels black) with a legend when
the classes have names; depth a blue-to-yellow colour ramp scaled per sample (invalid black);
normals the usual (n + 1)/2 → RGB; edges and texture edges white on black; keypoints a heat
overlay on the darkened image. Pixels a mask marks invalid are black.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from automtl_cli.artifacts import atomic_write
from automtl_cli.data.base import IGNORE_INDEX, LoadFailure, MultiTaskDataset
from automtl_cli.data.loader import build_dataset
from automtl_cli.data.synthetic import CLASS_NAMES
from automtl_cli.errors import BadInput
from automtl_cli.experiment import DataSource, ExperimentConfig, TaskType
from automtl_cli.extras import require

if TYPE_CHECKING:
    from PIL import Image


def _pil() -> Any:
    return require("PIL.Image", "images", "data preview")

__all__ = ["preview_experiment", "render_preview", "write_preview"]

_TITLES = {"seg": "seg", "depth": "depth", "normal": "normal", "edge": "edge (occlusion)",
           "edge2d": "edge2d (texture)", "keypoint": "keypoint"}
_BASE_PALETTE = np.array([
    (128, 64, 128), (70, 130, 180), (230, 25, 75), (60, 180, 75), (255, 225, 25),
    (245, 130, 48), (0, 130, 200), (145, 30, 180), (70, 240, 240), (240, 50, 230),
    (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
    (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
], dtype=np.uint8)
_RAMP = np.array([(13, 8, 135), (84, 2, 163), (139, 10, 165), (185, 50, 137), (219, 92, 104),
                  (244, 136, 73), (254, 188, 43), (240, 249, 33)], dtype=np.float64)
_HEADER = 18
_GAP = 2


def _palette(classes: int) -> np.ndarray:
    if classes <= len(_BASE_PALETTE):
        return _BASE_PALETTE[:classes]
    rng = np.random.default_rng(12345)  # fixed colours beyond the base palette
    extra = rng.integers(40, 256, size=(classes - len(_BASE_PALETTE), 3), dtype=np.uint8)
    return np.concatenate([_BASE_PALETTE, extra])


def _ramp(x: np.ndarray) -> np.ndarray:
    pos = np.clip(x, 0, 1) * (len(_RAMP) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_RAMP) - 2)
    frac = (pos - lo)[..., None]
    return (_RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac).round().astype(np.uint8)


def _to_unit(x: np.ndarray, source: DataSource) -> np.ndarray:
    """Taskonomy keeps keypoint and edge maps in [-1, 1]; show every map in [0, 1]."""
    return (x + 1) / 2 if source is DataSource.TASKONOMY else x


def _seg_rgb(label, valid, rgb, classes, source):
    out = _palette(classes)[np.clip(label, 0, classes - 1)]
    return out, valid & (label != IGNORE_INDEX)


def _depth_rgb(label, valid, rgb, classes, source):
    d = label[0]
    valid = valid & (d > 3e-5)
    lo, hi = (np.percentile(d[valid], [1, 99]) if valid.any() else (0.0, 1.0))
    return _ramp(1.0 - (d - lo) / max(hi - lo, 1e-6)), valid  # near is bright


def _normal_rgb(label, valid, rgb, classes, source):
    valid = valid & ((label * label).sum(0) > 0.25)
    out = np.round((np.clip(label.transpose(1, 2, 0), -1, 1) + 1) * 127.5).astype(np.uint8)
    return out, valid


def _keypoint_rgb(label, valid, rgb, classes, source):
    heat = np.clip(_to_unit(label[0], source), 0, 1)[..., None]
    hot = np.array([255.0, 220.0, 40.0])
    return (rgb * 0.35 * (1 - heat) + hot * heat).round().astype(np.uint8), valid


def _map_rgb(label, valid, rgb, classes, source):
    v = np.clip(_to_unit(label[0], source), 0, 1)
    return np.repeat(np.round(v * 255).astype(np.uint8)[..., None], 3, -1), valid


# How each task's label is drawn: (label, valid, image, classes, source) → (RGB, valid pixels).
_DRAW = {TaskType.SEG: _seg_rgb, TaskType.DEPTH: _depth_rgb, TaskType.NORMAL: _normal_rgb,
         TaskType.KEYPOINT: _keypoint_rgb, TaskType.EDGE: _map_rgb, TaskType.EDGE2D: _map_rgb}
_SMOOTH = {TaskType.DEPTH}  # tiles scaled bilinearly; the others keep their pixels


def _label_rgb(task: str, sample: dict[str, torch.Tensor], rgb: np.ndarray, classes: int,
               source: DataSource) -> np.ndarray:
    label = sample[task].detach().cpu().numpy()
    mask = sample.get(f"{task}_mask")
    valid = np.ones(label.shape[-2:], bool) if mask is None else mask[0].cpu().numpy()
    out, valid = _DRAW[TaskType(task)](label, valid, rgb, classes, source)
    return np.where(valid[..., None], out, 0).astype(np.uint8)


def _tile(array: np.ndarray, size: tuple[int, int], smooth: bool) -> Image.Image:
    pil = _pil()
    image = pil.fromarray(array)
    if image.size != size:
        image = image.resize(size, pil.BILINEAR if smooth else pil.NEAREST)
    return image


def render_preview(dataset: MultiTaskDataset, indices: Sequence[int], *,
                   tile: int = 160) -> Image.Image:
    """A grid: one row per sample index, columns image then each task of `dataset.tasks`."""
    samples = []
    for index in indices:
        item = dataset[int(index)]
        if isinstance(item, LoadFailure):
            item.raise_()
        samples.append(item)
    h, w = samples[0]["image"].shape[-2:]
    scale = tile / max(h, w)
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    columns = ["image", *dataset.tasks]
    legend = dataset.info.source is DataSource.SYNTHETIC and "seg" in dataset.tasks
    width = len(columns) * (tw + _GAP) - _GAP
    height = _HEADER + len(samples) * (th + _GAP) + (_HEADER if legend else 0)
    canvas = _pil().new("RGB", (width, height), (24, 24, 24))
    draw = require("PIL.ImageDraw", "images", "data preview").Draw(canvas)
    font = require("PIL.ImageFont", "images", "data preview").load_default()
    for c, name in enumerate(columns):
        draw.text((c * (tw + _GAP) + 4, 3), _TITLES.get(name, name), fill=(235, 235, 235),
                  font=font)
    for r, sample in enumerate(samples):
        rgb = dataset.to_rgb(sample["image"])
        top = _HEADER + r * (th + _GAP)
        canvas.paste(_tile(rgb, (tw, th), True), (0, top))
        for c, task in enumerate(dataset.tasks, start=1):
            array = _label_rgb(task, sample, rgb.astype(np.float64), dataset.info.seg_classes,
                               dataset.info.source)
            canvas.paste(_tile(array, (tw, th), task in _SMOOTH), (c * (tw + _GAP), top))
    if legend:
        x, y = 4, height - _HEADER + 3
        for name, color in zip(CLASS_NAMES, _palette(len(CLASS_NAMES))):
            draw.rectangle((x, y + 1, x + 10, y + 11), fill=tuple(int(v) for v in color))
            draw.text((x + 14, y), name, fill=(235, 235, 235), font=font)
            x += 16 + int(draw.textlength(name, font=font)) + 10
    return canvas


def write_preview(path: str | os.PathLike, image: Image.Image) -> Path:
    """Write the preview as PNG, atomically."""
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def preview_experiment(experiment: ExperimentConfig, path: str | os.PathLike, *,
                       split: str = "val", samples: int = 4, seed: int | None = None,
                       cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Draw `samples` samples of `split` into the PNG at `path`; returns a summary.

    Synthetic data: `seed` replaces the scene seed, and only the scenes shown are generated.
    Real data: `seed` picks random samples of the split instead of the first ones.
    """
    if samples < 1:
        raise BadInput(f"--samples must be at least 1, got {samples}")
    _pil()  # a missing Pillow fails before any scene is generated or read
    data = experiment.data
    synthetic = data.source is DataSource.SYNTHETIC
    if synthetic and seed is not None:
        data = dataclasses.replace(data, seed=seed)
    dataset = build_dataset(data, experiment.task_names, split, cache_dir=cache_dir,
                            count=samples if synthetic else None)
    n = min(samples, len(dataset))
    if seed is not None and not synthetic:
        indices = sorted(int(i) for i in np.random.default_rng(seed).choice(
            len(dataset), size=n, replace=False))
    else:
        indices = list(range(n))
    image = render_preview(dataset, indices)
    out = write_preview(path, image)
    return {"path": str(out), "data": data.source.value, "root": data.root, "split": split,
            "tasks": list(experiment.task_names), "samples": n, "indices": indices,
            "seed": data.seed if synthetic else seed, "width": image.width,
            "height": image.height}
