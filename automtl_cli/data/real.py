"""NYUv2, CityScapes and Tiny-Taskonomy in the preprocessed layouts AdaShare and AutoMTL use.

Each dataset root holds a JSON split list (docs/method.md §7): an object whose keys are split names
(`train`, `train1`, `train2`, `test`, Taskonomy's `test_small`, optionally `val`) and whose
values are lists of entries, each a list of file paths relative to the root:

    NYUv2       nyu_v2_3task.json  [image, seg, normal, depth]
                image: an RGB image file; seg: 8-bit PNG, classes 0..39, 255 unlabelled;
                normal: RGB PNG, n = v/255·2 − 1, pixels with a channel at 255 unlabelled;
                depth: .npy float metres (H×W or H×W×1), values ≤ 3e-5 unlabelled
    CityScapes  cityscape.json     [image, depth, label2, label7, label19]
                image: .npy RGB, float in [0, 1] or uint8; depth: .npy float (H×W or H×W×1),
                values ≤ 3e-5 unlabelled; label19: .npy integers 0..18, -1 unlabelled
    Taskonomy   taskonomy.json     [image, seg, normal, depth, keypoint, edge], all PNG,
                plus semseg_prior_factor.npy (17 class weights); everything is first resized
                to 256×256. seg: 8-bit, 0 unlabelled, classes 1..17 (shifted to 0..16); normal:
                RGB PNG → [-1, 1]; depth d (16-bit): log(1 + d)/log(2¹⁶), valid where
                d < 64500 (which also masks normals); keypoint (16-bit): d/2¹⁶ rescaled from
                [0, 0.005] to [-1, 1]; edge (16-bit): d/2¹⁶ rescaled from [0, 0.08] to [-1, 1]

NYUv2 normals: the reference feeds the raw 0–254 PNG values and only L2-normalises them
(the reference leaves that open); here they map to [-1, 1] first, and a flip negates x in every
dataset (the reference does so for Taskonomy only).

Images become BGR minus the Caffe mean (104.008, 116.669, 122.679), unscaled. Our split `test`
reads `test` (Taskonomy: `test_small` when present); `val` reads `val` where the JSON has it and
otherwise the test list, as the reference does (it has no validation split). Training splits
are augmented (automtl_cli/data/transforms.py); test splits are resized to the test size.

Every problem with a file stops the run with one line naming the file and what is wrong
(BadInput, exit 65): missing, unreadable, wrong dtype or shape, labels out of range. A missing
root is MissingInput (exit 66). Nothing is skipped and nothing retries: the reference's loaders
swallow errors with a bare `except` and can loop forever.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from automtl_cli.data.base import IGNORE_INDEX, DatasetInfo, MultiTaskDataset
from automtl_cli.data.transforms import augment, resize_sample
from automtl_cli.errors import BadInput, MissingInput
from automtl_cli.experiment import (
    DATASET_CLASSES,
    DATASET_TASKS,
    NATIVE_SIZE,
    DataConfig,
    DataSource,
)
from automtl_cli.extras import require

__all__ = ["BGR_MEAN", "CityscapesDataset", "NYUv2Dataset", "TaskonomyDataset",
           "build_real_dataset"]

logger = logging.getLogger(__name__)

BGR_MEAN = (104.008, 116.669, 122.679)
TRAIN_SPLITS = ("train", "train1", "train2")


# --- readers: each names the file in every error ---------------------------------------------

def _read_image(path: Path) -> np.ndarray:
    """H×W×C array of an image file, via Pillow (8- or 16-bit)."""
    pil = require("PIL.Image", "images", "reading dataset images")

    if not path.is_file():
        raise BadInput(f"{path}: missing (listed in the split list)")
    try:
        with pil.open(path) as im:
            im.load()
            mode = im.mode
            array = np.array(im)
    except (pil.UnidentifiedImageError, OSError, ValueError) as e:
        raise BadInput(f"{path}: not a readable image ({e})") from e
    if mode in ("RGBA", "LA", "CMYK", "YCbCr", "HSV", "1"):
        raise BadInput(f"{path}: unsupported image mode {mode}")
    return array


def _read_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise BadInput(f"{path}: missing (listed in the split list)")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise BadInput(f"{path}: not a readable .npy array ({e})") from e
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        raise BadInput(f"{path}: expected a numeric array, found {getattr(array, 'dtype', '?')}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise BadInput(f"{path}: contains NaN or infinite values")
    return array


def _plane(path: Path, array: np.ndarray, hw: tuple[int, ...] | None, what: str) -> np.ndarray:
    """An H×W label (H×W×1 accepted) whose size matches the image's."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise BadInput(f"{path}: {what} must be H×W, found shape {array.shape}")
    _same_size(path, array, hw)
    return array


def _rgb(path: Path, array: np.ndarray, hw: tuple[int, ...] | None, what: str) -> np.ndarray:
    if array.ndim != 3 or array.shape[2] != 3:
        raise BadInput(f"{path}: {what} must be H×W×3, found shape {array.shape}")
    _same_size(path, array, hw)
    return array


def _same_size(path: Path, array: np.ndarray, hw: tuple[int, ...] | None) -> None:
    if hw is not None and tuple(array.shape[:2]) != tuple(hw):
        raise BadInput(f"{path}: size {array.shape[0]}×{array.shape[1]} does not match the "
                       f"image's {hw[0]}×{hw[1]}")


def _seg_labels(path: Path, raw: np.ndarray, classes: int, unlabelled: int,
                shift: int = 0) -> torch.Tensor:
    """Map raw values to 0..classes-1 and IGNORE_INDEX; anything else is an error."""
    if raw.dtype.kind == "f":
        if not np.array_equal(raw, np.round(raw)):
            raise BadInput(f"{path}: seg labels must be integers")
    raw = raw.astype(np.int64)
    labels = raw - shift
    ignore = raw == unlabelled
    bad = ~ignore & ((labels < 0) | (labels >= classes))
    if bad.any():
        value = int(raw[bad][0])
        raise BadInput(f"{path}: seg value {value} is out of range ({classes} classes"
                       f"{f', shifted by {shift}' if shift else ''}; {unlabelled} = unlabelled)")
    return torch.from_numpy(np.where(ignore, IGNORE_INDEX, labels))


def _bgr_image(rgb: np.ndarray) -> torch.Tensor:
    bgr = rgb[..., ::-1].astype(np.float32) - np.asarray(BGR_MEAN, np.float32)
    return torch.from_numpy(np.ascontiguousarray(bgr)).permute(2, 0, 1).contiguous()


def _plane_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]


def _unit_normals(n: np.ndarray, valid: np.ndarray) -> torch.Tensor:
    norm = np.sqrt((n * n).sum(-1, keepdims=True))
    n = np.where(valid[..., None] & (norm > 1e-6), n / np.maximum(norm, 1e-6), 0.0)
    return torch.from_numpy(n.astype(np.float32)).permute(2, 0, 1).contiguous()


# --- the split list --------------------------------------------------------------------------

def _split_entries(root: Path, json_name: str, split: str, columns: int,
                   test_key: str = "test") -> list[list[str]]:
    path = root / json_name
    if not path.is_file():
        raise BadInput(f"{root}: no {json_name} (the split list of this dataset layout)")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"{path}: not readable JSON ({e})") from e
    if not isinstance(table, dict):
        raise BadInput(f"{path}: expected an object of split lists, found {type(table).__name__}")
    key = split
    if split == "test":
        key = test_key if test_key in table else "test"
    elif split == "val" and "val" not in table:
        key = test_key if test_key in table else "test"
        logger.warning("%s has no val split; validating on %r, as the reference does", path, key)
    if key not in table:
        raise BadInput(f"{path}: no {key!r} split (it has {', '.join(map(str, table)) or 'none'})")
    entries = table[key]
    if not isinstance(entries, list) or not entries:
        raise BadInput(f"{path}: split {key!r} must be a non-empty list of entries")
    for i, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) == columns
                and all(isinstance(p, str) and p for p in entry)):
            raise BadInput(f"{path}: split {key!r} entry {i} must be a list of {columns} paths, "
                           f"found {entry!r}"[:300])
    return entries


class _JsonLayoutDataset(MultiTaskDataset):
    source: DataSource
    json_name: str
    columns: int
    test_key = "test"

    def __init__(self, data: DataConfig, tasks: Sequence[str], split: str) -> None:
        assert data.root is not None
        root = Path(data.root).expanduser()
        if not root.exists():
            raise MissingInput(f"{root}: {self.source.value} dataset root not found")
        if not root.is_dir():
            raise BadInput(f"{root}: the {self.source.value} dataset root must be a directory")
        self.root = root
        self.data = data.resolve()
        self.tasks = tuple(tasks)
        self.split = split
        unknown = [t for t in self.tasks if t not in DATASET_TASKS[self.source]]
        if unknown:
            raise BadInput(f"{self.source.value} has no {', '.join(unknown)} labels")
        self.entries = _split_entries(root, self.json_name, split, self.columns, self.test_key)
        self.info = DatasetInfo(self.source, DATASET_TASKS[self.source],
                                DATASET_CLASSES[self.source], self._class_weights())

    def _class_weights(self) -> tuple[float, ...] | None:
        return None

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def augments(self) -> bool:
        return self.split in TRAIN_SPLITS

    def path(self, index: int, column: int) -> Path:
        return self.root / self.entries[index][column]

    def read(self, index: int) -> dict[str, torch.Tensor]:
        """The sample at native size, with masks."""
        raise NotImplementedError  # pragma: no cover - abstract

    def load(self, index: int, rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
        sample = self.read(index)
        if rng is not None:
            assert self.data.crop_size is not None
            return augment(sample, rng, crop=self.data.crop_size, min_scale=self.data.min_scale,
                           max_scale=self.data.max_scale, flip=self.data.flip)
        if self.data.test_size not in (None, NATIVE_SIZE):
            return resize_sample(sample, self.data.test_size)
        return sample

    def to_rgb(self, image: torch.Tensor) -> np.ndarray:
        bgr = image.detach().float().cpu().permute(1, 2, 0).numpy() + np.asarray(BGR_MEAN)
        return np.clip(np.round(bgr[..., ::-1]), 0, 255).astype(np.uint8)


class NYUv2Dataset(_JsonLayoutDataset):
    source = DataSource.NYUV2
    json_name = "nyu_v2_3task.json"
    columns = 4

    def read(self, index: int) -> dict[str, torch.Tensor]:
        path = self.path(index, 0)
        image = _rgb(path, _read_image(path), None, "the image")
        hw = image.shape[:2]
        sample = {"image": _bgr_image(image)}
        if "seg" in self.tasks:
            path = self.path(index, 1)
            raw = _plane(path, _read_image(path), hw, "the seg label")
            sample["seg"] = _seg_labels(path, raw, self.info.seg_classes, 255)
        if "normal" in self.tasks:
            path = self.path(index, 2)
            raw = _rgb(path, _read_image(path), hw, "the normal map")
            valid = raw.max(axis=-1) < 255
            sample["normal"] = _unit_normals(raw.astype(np.float32) / 255 * 2 - 1, valid)
            sample["normal_mask"] = torch.from_numpy(valid)[None]
        if "depth" in self.tasks:
            path = self.path(index, 3)
            depth = _plane(path, _read_npy(path), hw, "the depth map").astype(np.float32)
            sample["depth"] = _plane_tensor(depth)
            sample["depth_mask"] = torch.from_numpy(depth > 3e-5)[None]
        return sample


class CityscapesDataset(_JsonLayoutDataset):
    source = DataSource.CITYSCAPES
    json_name = "cityscape.json"
    columns = 5

    def read(self, index: int) -> dict[str, torch.Tensor]:
        path = self.path(index, 0)
        image = _rgb(path, _read_npy(path), None, "the image")
        if image.dtype.kind == "f":
            if image.min() < 0 or image.max() > 1.0 + 1e-3:
                raise BadInput(f"{path}: a float image must hold RGB in [0, 1], found values in "
                               f"[{image.min():.3g}, {image.max():.3g}]")
            image = image * 255.0
        elif image.dtype != np.uint8:
            raise BadInput(f"{path}: the image must be float in [0, 1] or uint8, found "
                           f"{image.dtype}")
        hw = image.shape[:2]
        sample = {"image": _bgr_image(image)}
        if "depth" in self.tasks:
            path = self.path(index, 1)
            depth = _plane(path, _read_npy(path), hw, "the depth map").astype(np.float32)
            sample["depth"] = _plane_tensor(depth)
            sample["depth_mask"] = torch.from_numpy(depth > 3e-5)[None]
        if "seg" in self.tasks:
            path = self.path(index, 4)
            raw = _plane(path, _read_npy(path), hw, "label19")
            sample["seg"] = _seg_labels(path, raw, self.info.seg_classes, -1)
        return sample


class TaskonomyDataset(_JsonLayoutDataset):
    source = DataSource.TASKONOMY
    json_name = "taskonomy.json"
    columns = 6
    test_key = "test_small"
    native = (256, 256)

    def _class_weights(self) -> tuple[float, ...] | None:
        if "seg" not in self.tasks:
            return None
        path = self.root / "semseg_prior_factor.npy"
        if not path.is_file():
            raise BadInput(f"{path}: missing (Taskonomy's seg class weights)")
        prior = _read_npy(path).astype(np.float64).reshape(-1)
        classes = DATASET_CLASSES[self.source]
        if prior.shape != (classes,) or (prior < 0).any():
            raise BadInput(f"{path}: expected {classes} non-negative class weights, found shape "
                           f"{prior.shape}")
        return tuple(float(p) for p in prior)

    def _label16(self, index: int, column: int, hw: tuple[int, ...], what: str) -> np.ndarray:
        path = self.path(index, column)
        raw = _plane(path, _read_image(path), hw, what)
        if raw.dtype.kind not in "ui":
            raise BadInput(f"{path}: {what} must be an integer PNG, found {raw.dtype}")
        return raw.astype(np.float64)

    def read(self, index: int) -> dict[str, torch.Tensor]:
        path = self.path(index, 0)
        image = _rgb(path, _read_image(path), None, "the image")
        hw = image.shape[:2]
        sample = {"image": _bgr_image(image)}
        tasks = self.tasks
        valid = None
        if "depth" in tasks or "normal" in tasks:
            d = self._label16(index, 3, hw, "the depth map")
            valid = d < 64500
            if "depth" in tasks:
                sample["depth"] = _plane_tensor(np.log1p(d) / np.log(2.0**16))
                sample["depth_mask"] = torch.from_numpy(valid)[None]
        if "seg" in tasks:
            path = self.path(index, 1)
            raw = _plane(path, _read_image(path), hw, "the seg label")
            sample["seg"] = _seg_labels(path, raw, self.info.seg_classes, 0, shift=1)
        if "normal" in tasks:
            path = self.path(index, 2)
            raw = _rgb(path, _read_image(path), hw, "the normal map")
            assert valid is not None
            sample["normal"] = _unit_normals(raw.astype(np.float32) / 255 * 2 - 1, valid)
            sample["normal_mask"] = torch.from_numpy(valid)[None]
        for task, column, top in (("keypoint", 4, 0.005), ("edge2d", 5, 0.08)):
            if task in tasks:
                v = self._label16(index, column, hw, f"the {task} map") / 2.0**16
                sample[task] = _plane_tensor(np.clip(v / top * 2 - 1, -1, 1))
                sample[f"{task}_mask"] = torch.ones((1, *hw), dtype=torch.bool)
        return resize_sample(sample, self.native)


_DATASETS = {DataSource.NYUV2: NYUv2Dataset, DataSource.CITYSCAPES: CityscapesDataset,
             DataSource.TASKONOMY: TaskonomyDataset}


def build_real_dataset(data: DataConfig, tasks: Sequence[str], split: str) -> MultiTaskDataset:
    return _DATASETS[data.source](data, tasks, split)
