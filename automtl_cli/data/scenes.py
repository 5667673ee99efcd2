"""The synthetic dataset as torch samples, decoded from the cached quantised scenes.

Scenes of a split are loaded into memory once (about 50 kB each at 64×64) and decoded per item.
The image is RGB scaled to [0, 1], then normalised with mean 0.5 and std 0.25 per channel.
Labels: seg int64 (6 classes, no ignored pixels); depth is camera z in units of 10 m (the z-buffer
divided by 10, so typical values are 0.1–1); normals are unit vectors in the camera frame; edge
(0/1), edge2d and keypoint are in [0, 1]. Synthetic data needs no augmentation: each split is
a fresh draw of scenes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from automtl_cli.data.base import DatasetInfo, MultiTaskDataset
from automtl_cli.data.cache import SceneCache
from automtl_cli.experiment import (
    DATASET_CLASSES,
    DATASET_TASKS,
    DataSource,
    SyntheticConfig,
    TaskType,
)

__all__ = ["IMAGE_MEAN", "IMAGE_STD", "SyntheticDataset"]

IMAGE_MEAN = 0.5
IMAGE_STD = 0.25
DEPTH_UNIT = 10.0  # metres per label unit


class SyntheticDataset(MultiTaskDataset):
    def __init__(self, cfg: SyntheticConfig, tasks: Sequence[str], split: str, *, seed: int = 0,
                 count: int | None = None, cache_dir: str | os.PathLike | None = None,
                 num_workers: int = 0) -> None:
        self.cfg = cfg
        self.tasks = tuple(tasks)
        self.split = split
        self.info = DatasetInfo(DataSource.SYNTHETIC, DATASET_TASKS[DataSource.SYNTHETIC],
                                DATASET_CLASSES[DataSource.SYNTHETIC])
        n = cfg.count(split) if count is None else count
        self.arrays = SceneCache(cfg, seed, cache_dir).load(split, n, num_workers)

    def __len__(self) -> int:
        return int(self.arrays["image"].shape[0])

    def load(self, index: int, rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
        a = self.arrays
        image = torch.from_numpy(a["image"][index]).permute(2, 0, 1).float() / 255.0
        sample = {"image": (image - IMAGE_MEAN) / IMAGE_STD}
        for task in self.tasks:
            sample[task] = _decode(task, a[task][index])
        return sample

    def __getitems__(self, items: Sequence[int | tuple[int, int, int]]) -> dict[str, torch.Tensor]:
        """A whole batch decoded at once (the DataLoader's batched fetch): the same tensors as
        stacking `load` of each item, without per-sample Python work or a collate step."""
        index = np.array([i if isinstance(i, int) else i[0] for i in items], dtype=np.int64)
        if index.size and not (0 <= index.min() and index.max() < len(self)):
            raise IndexError(int(index[(index < 0) | (index >= len(self))][0]))
        a = self.arrays
        image = torch.from_numpy(a["image"][index]).permute(0, 3, 1, 2).float() / 255.0
        batch = {"image": ((image - IMAGE_MEAN) / IMAGE_STD).contiguous()}
        for task in self.tasks:
            batch[task] = _DECODE_BATCH[TaskType(task)](a[task][index]).contiguous()
        return batch

    def to_rgb(self, image: torch.Tensor) -> np.ndarray:
        rgb = (image.detach().float().cpu() * IMAGE_STD + IMAGE_MEAN).clamp(0, 1) * 255
        return rgb.round().byte().permute(1, 2, 0).numpy()


def _decode_normal(stored: np.ndarray) -> torch.Tensor:
    n = torch.from_numpy(stored.astype(np.float32) / 127.0).permute(2, 0, 1)
    return n / n.norm(dim=0, keepdim=True).clamp_min(1e-6)


# How each task's label is stored in the cache (quantised: synthetic/generate.py) and read back.
_DECODE = {
    TaskType.SEG: lambda a: torch.from_numpy(a.astype(np.int64)),
    TaskType.DEPTH: lambda a: torch.from_numpy(a.astype(np.float32) / DEPTH_UNIT)[None],
    TaskType.NORMAL: _decode_normal,
    TaskType.EDGE: lambda a: torch.from_numpy(a.astype(np.float32))[None],  # stored as 0/1
    TaskType.EDGE2D: lambda a: torch.from_numpy(a.astype(np.float32) / 255.0)[None],
    TaskType.KEYPOINT: lambda a: torch.from_numpy(a.astype(np.float32) / 255.0)[None],
}


def _decode_normals(stored: np.ndarray) -> torch.Tensor:
    n = torch.from_numpy(stored.astype(np.float32) / 127.0).permute(0, 3, 1, 2)
    return n / n.norm(dim=1, keepdim=True).clamp_min(1e-6)


# The same decoding for a batch of labels (leading batch axis).
_DECODE_BATCH = {
    TaskType.SEG: lambda a: torch.from_numpy(a.astype(np.int64)),
    TaskType.DEPTH: lambda a: torch.from_numpy(a.astype(np.float32) / DEPTH_UNIT)[:, None],
    TaskType.NORMAL: _decode_normals,
    TaskType.EDGE: lambda a: torch.from_numpy(a.astype(np.float32))[:, None],
    TaskType.EDGE2D: lambda a: torch.from_numpy(a.astype(np.float32) / 255.0)[:, None],
    TaskType.KEYPOINT: lambda a: torch.from_numpy(a.astype(np.float32) / 255.0)[:, None],
}


def _decode(task: str, stored: np.ndarray) -> torch.Tensor:
    return _DECODE[TaskType(task)](stored)
