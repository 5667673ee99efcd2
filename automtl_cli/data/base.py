"""What every dataset shares: the sample format, dataset facts, and errors that cross processes.

A sample is a dict of tensors: `"image"` float32 3×H×W, and one label per requested task (the
formats are listed in automtl_cli/data/__init__.py), plus `"<task>_mask"` (bool 1×H×W) where
a dataset marks valid pixels. Items are addressed as `(index, seed, epoch)` so that any random
augmentation is a function of those three numbers alone, never of a worker's RNG.

A bad file inside a DataLoader worker must stop the run with the same one-line error as in the
main process; torch would re-raise it wrapped in a traceback text. So a dataset's
`__getitem__` returns a `LoadFailure` instead of raising, `collate` passes the first one on,
and the loader raises it again in the main process (automtl_cli/data/loader.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate

from automtl_cli.errors import AutomtlError, BadInput
from automtl_cli.experiment import DataSource

__all__ = [
    "IGNORE_INDEX",
    "DatasetInfo",
    "LoadFailure",
    "MultiTaskDataset",
    "collate",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255  # seg pixels without a label, in every dataset (CityScapes' -1 is mapped)


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about a dataset that tasks need: class count, class weights, the source."""

    source: DataSource
    tasks: tuple[str, ...]
    seg_classes: int
    seg_class_weights: tuple[float, ...] | None = None


@dataclass(frozen=True)
class LoadFailure:
    """An error met while loading a sample, carried to the main process as data."""

    error_type: type
    message: str

    def raise_(self) -> None:
        cls = self.error_type if issubclass(self.error_type, AutomtlError) else BadInput
        try:
            error = cls(self.message)
        except TypeError:  # an error class that wants more than a message
            error = BadInput(self.message)
        raise error


class MultiTaskDataset(Dataset):
    """Base of every dataset: `__getitem__((index, seed, epoch))` → sample dict or LoadFailure."""

    info: DatasetInfo
    tasks: tuple[str, ...]
    split: str

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, index: int, rng: np.random.Generator | None) -> dict[str, torch.Tensor]:
        """One sample; `rng` is None where the split takes no augmentation."""
        raise NotImplementedError  # pragma: no cover - abstract

    @property
    def augments(self) -> bool:
        return False

    def __getitem__(self, item: int | tuple[int, int, int]) -> Any:
        index, seed, epoch = (item, 0, 0) if isinstance(item, int) else item
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([seed, epoch, index]) if self.augments else None
        try:
            return self.load(index, rng)
        except AutomtlError as e:
            return LoadFailure(type(e), str(e))

    def to_rgb(self, image: torch.Tensor) -> np.ndarray:
        """A sample's `image` back to displayable H×W×3 uint8 RGB."""
        raise NotImplementedError  # pragma: no cover - abstract


def collate(items: Sequence[Any]) -> Any:
    """`default_collate`, except that a LoadFailure in the batch becomes the batch, and a batch
    a dataset decoded whole (`__getitems__` returning a dict) is already collated."""
    if isinstance(items, dict):
        return items
    for item in items:
        if isinstance(item, LoadFailure):
            return item
    return default_collate(list(items))
