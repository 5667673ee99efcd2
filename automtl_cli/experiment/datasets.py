"""The closed vocabularies of an experiment and what each dataset has (the lowest layer).

Task types, the named task sets, the splits and the data sources, and the dataset facts that
validation and defaults need: which labels each dataset has, its seg class count, and the
reference's training crops and test-time sizes (docs/method.md §7).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from automtl_cli.registry import Choice

__all__ = [
    "DATASET_CLASSES",
    "DATASET_TASKS",
    "NATIVE_SIZE",
    "REFERENCE_CROP",
    "REFERENCE_TEST_SIZE",
    "SPLITS",
    "TASK_SETS",
    "TASK_TYPES",
    "DataSource",
    "TaskType",
]


class TaskType(Choice):
    """What a task predicts; each has its strategy in automtl_cli/tasks/types/."""

    SEG = "seg"  # semantic segmentation
    DEPTH = "depth"
    NORMAL = "normal"  # surface normals
    EDGE = "edge"  # occlusion edges
    EDGE2D = "edge2d"  # texture edges
    KEYPOINT = "keypoint"


TASK_TYPES = TaskType.values()
TASK_SETS: Mapping[str, tuple[str, ...]] = {
    "nyu3": ("seg", "depth", "normal"),
    "taskonomy5": ("seg", "normal", "depth", "keypoint", "edge2d"),
}
SPLITS = ("train", "train1", "train2", "val", "test")


class DataSource(enum.Enum):
    SYNTHETIC = "synthetic"
    NYUV2 = "nyuv2"
    CITYSCAPES = "cityscapes"
    TASKONOMY = "taskonomy"


DATASET_TASKS: Mapping[DataSource, tuple[str, ...]] = {
    DataSource.SYNTHETIC: TASK_TYPES,
    DataSource.NYUV2: ("seg", "normal", "depth"),
    DataSource.CITYSCAPES: ("seg", "depth"),
    DataSource.TASKONOMY: ("seg", "normal", "depth", "keypoint", "edge2d"),
}
DATASET_CLASSES: Mapping[DataSource, int] = {
    DataSource.SYNTHETIC: 6,
    DataSource.NYUV2: 40,
    DataSource.CITYSCAPES: 19,
    DataSource.TASKONOMY: 17,
}
# The reference's training crops and test-time sizes of the real datasets; (0, 0) keeps each
# test image's native size.
NATIVE_SIZE = (0, 0)
REFERENCE_CROP: Mapping[DataSource, tuple[int, int]] = {
    DataSource.NYUV2: (321, 321),
    DataSource.CITYSCAPES: (224, 224),
    DataSource.TASKONOMY: (224, 224),
}
REFERENCE_TEST_SIZE: Mapping[DataSource, tuple[int, int]] = {
    DataSource.NYUV2: (321, 321),
    DataSource.CITYSCAPES: NATIVE_SIZE,
    DataSource.TASKONOMY: (224, 224),
}
