"""The data path of issue 18: whole-batch decoding, persistent workers, resumable epochs."""

from __future__ import annotations

import torch
from torch.utils.data import default_collate

from automtl_cli.data import build_dataset, build_loader
from automtl_cli.experiment import TASK_TYPES

from conftest_data import tiny_synthetic


def test_a_batch_decoded_whole_equals_the_stacked_samples(scene_cache):
    dataset = build_dataset(tiny_synthetic(), TASK_TYPES, "train", cache_dir=scene_cache,
                            count=16)
    items = [(i, 3, 1) for i in (5, 0, 11, 2)]
    whole = dataset.__getitems__(items)
    stacked = default_collate([dataset[i] for i in items])
    assert set(whole) == set(stacked)
    for k in stacked:
        assert whole[k].dtype == stacked[k].dtype and whole[k].is_contiguous(), k
        assert torch.equal(whole[k], stacked[k]), k


def test_workers_persist_across_epochs_and_a_resumed_epoch_matches(scene_cache):
    tasks = ("seg", "depth")
    loader = build_loader(tiny_synthetic(), tasks, "train", seed=7, cache_dir=scene_cache,
                          num_workers=2)
    first = list(loader.epoch(0))
    dl = loader._loader
    assert dl is not None and dl.persistent_workers
    second = list(loader.epoch(1))
    assert loader._loader is dl  # no rebuild, no new worker processes
    serial = build_loader(tiny_synthetic(), tasks, "train", seed=7, cache_dir=scene_cache)
    for got, want in zip(first + second, list(serial.epoch(0)) + list(serial.epoch(1))):
        assert all(torch.equal(got[k], want[k]) for k in want)
    resumed = list(loader.epoch(1, start=3))
    assert len(resumed) == len(second) - 3
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(resumed, second[3:]))


def test_two_epochs_read_at_once_do_not_disturb_each_other(scene_cache):
    loader = build_loader(tiny_synthetic(), ("seg",), "train", seed=1, cache_dir=scene_cache)
    a, b = loader.epoch(0), loader.epoch(1)
    pairs = list(zip(a, b))
    alone = list(build_loader(tiny_synthetic(), ("seg",), "train", seed=1,
                              cache_dir=scene_cache).epoch(1))
    assert all(torch.equal(y["seg"], z["seg"]) for (_, y), z in zip(pairs, alone))
