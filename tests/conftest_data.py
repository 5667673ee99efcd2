"""Helpers for the data tests: tiny synthetic configs and real-dataset layouts written on the fly.

Imported explicitly (`from conftest_data import ...`); tests/conftest.py belongs to the front end.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from PIL import Image

from automtl_cli.experiment import DataConfig, DataSource, SyntheticConfig

SPLIT_SIZES = {"train": 3, "train1": 2, "train2": 2, "test": 2}


def tiny_synthetic(size: int = 32, **fields) -> DataConfig:
    """A synthetic data config of `size`×`size` scenes with small split counts."""
    counts = {"train": 64, "train1": 32, "train2": 32, "val": 32, "test": 32}
    counts.update({k: v for k, v in fields.items() if k in counts})
    knobs = {k: v for k, v in fields.items() if k not in counts}
    return DataConfig(synthetic=SyntheticConfig(image_size=size, **counts, **knobs),
                      batch_size=8, val_batch_size=16)


def real_data(source: DataSource, root: Path, **fields) -> DataConfig:
    """A real-dataset config with small crops, so tiny files go through augmentation."""
    defaults = {"crop_size": (12, 16), "test_size": (0, 0)}  # test at native size
    defaults.update(fields)
    return dataclasses.replace(DataConfig(source=source, root=str(root)), **defaults)


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)


def _splits(root: Path, name: str, entry, sizes: dict[str, int]) -> None:
    table, i = {}, 0
    for split, n in sizes.items():
        table[split] = [entry(i + k) for k in range(n)]
        i += n
    (root / name).write_text(json.dumps(table))


def write_nyuv2(root: Path, hw: tuple[int, int] = (18, 20), sizes=None) -> Path:
    """nyu_v2_3task.json → [image png, seg png, normal png, depth npy]."""
    rng = np.random.default_rng(0)
    h, w = hw

    def entry(i: int) -> list[str]:
        files = [f"img/{i}.png", f"seg/{i}.png", f"normal/{i}.png", f"depth/{i}.npy"]
        _png(root / files[0], rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        seg = rng.integers(0, 40, (h, w), dtype=np.uint8)
        seg[0, :] = 255
        _png(root / files[1], seg)
        normal = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        normal[1, :] = 255  # unlabelled row
        _png(root / files[2], normal)
        depth = rng.uniform(0.5, 9.0, (h, w)).astype(np.float32)
        depth[2, :] = 0.0
        _npy(root / files[3], depth)
        return files

    _splits(root, "nyu_v2_3task.json", entry, sizes or SPLIT_SIZES)
    return root


def write_cityscapes(root: Path, hw: tuple[int, int] = (16, 24), sizes=None) -> Path:
    """cityscape.json → [image npy, depth npy, label2 npy, label7 npy, label19 npy]."""
    rng = np.random.default_rng(1)
    h, w = hw

    def entry(i: int) -> list[str]:
        files = [f"image/{i}.npy", f"depth/{i}.npy", f"label2/{i}.npy", f"label7/{i}.npy",
                 f"label19/{i}.npy"]
        _npy(root / files[0], rng.uniform(0, 1, (h, w, 3)).astype(np.float32))
        depth = rng.uniform(0.0, 0.1, (h, w, 1)).astype(np.float32)
        depth[0] = 0.0
        _npy(root / files[1], depth)
        _npy(root / files[2], rng.integers(-1, 2, (h, w)).astype(np.float32))
        _npy(root / files[3], rng.integers(-1, 7, (h, w)).astype(np.float32))
        label = rng.integers(0, 19, (h, w)).astype(np.float32)
        label[:, 0] = -1
        _npy(root / files[4], label)
        return files

    _splits(root, "cityscape.json", entry, sizes or SPLIT_SIZES)
    return root


def write_taskonomy(root: Path, hw: tuple[int, int] = (20, 20), sizes=None) -> Path:
    """taskonomy.json → [rgb, seg, normal, depth, keypoint, edge] PNGs, plus the seg prior."""
    rng = np.random.default_rng(2)
    h, w = hw
    sizes = sizes or {"train": 3, "train1": 2, "train2": 2, "test_small": 2}

    def entry(i: int) -> list[str]:
        names = ["rgb", "segment_semantic", "normal", "depth_zbuffer", "keypoints2d",
                 "edge_texture"]
        files = [f"{n}/{i}.png" for n in names]
        _png(root / files[0], rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        _png(root / files[1], rng.integers(0, 18, (h, w), dtype=np.uint8))
        _png(root / files[2], rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        depth = rng.integers(0, 60000, (h, w)).astype(np.uint16)
        depth[0, :] = 65535  # no depth: masks depth and normals
        _png(root / files[3], depth)
        _png(root / files[4], rng.integers(0, 400, (h, w)).astype(np.uint16))
        _png(root / files[5], rng.integers(0, 6000, (h, w)).astype(np.uint16))
        return files

    _splits(root, "taskonomy.json", entry, sizes)
    np.save(root / "semseg_prior_factor.npy", rng.uniform(0.5, 2.0, 17))
    return root
