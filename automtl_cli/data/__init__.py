"""Datasets: the built-in synthetic scenes and the real datasets' loaders (tasks-and-data layer).

API for the engine:

    loader = build_loader(experiment.data, experiment.task_names, "train1", seed=0,
                          num_workers=2)            # BatchLoader
    for batch in loader.epoch(0): ...               # or loader.forever()
    dataset = loader.dataset                        # MultiTaskDataset; .info → DatasetInfo

Splits: `train` (pre-train, post-train), `train1` (weight steps of the search), `train2`
(policy steps), `val`, `test`. Synthetic splits are disjoint index ranges of one scene generator;
real splits are the lists of the dataset's JSON file (automtl_cli/data/real.py).

A batch is a dict of tensors (N = batch, H×W = the sample size):

    image           float32 N×3×H×W (synthetic: RGB, (x − 0.5)/0.25; real: BGR − Caffe mean)
    seg             int64 N×H×W, 255 = unlabelled
    depth           float32 N×1×H×W (synthetic: metres / 10; real: as the dataset stores it)
    normal          float32 N×3×H×W, unit vectors; zero vectors are unlabelled
    edge, edge2d, keypoint   float32 N×1×H×W
    <task>_mask     bool N×1×H×W, where a dataset marks valid pixels (real datasets)

Batches do not depend on the number of workers: the order is a function of (seed, epoch) and
augmentation a function of (seed, epoch, index). Generated scenes live in the cache
(automtl_cli/data/cache.py), never in the repository. `render_preview` draws a grid of samples
with each task's label beside the image.
"""

from automtl_cli.data.base import IGNORE_INDEX, DatasetInfo, MultiTaskDataset
from automtl_cli.data.cache import SceneCache, default_cache_dir
from automtl_cli.data.loader import BatchLoader, build_dataset, build_loader

__all__ = [
    "IGNORE_INDEX",
    "BatchLoader",
    "DatasetInfo",
    "MultiTaskDataset",
    "SceneCache",
    "build_dataset",
    "build_loader",
    "default_cache_dir",
]
