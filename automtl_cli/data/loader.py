"""Datasets and batch loaders for a split, with batches that do not depend on the worker count.

`build_dataset(data, tasks, split)` picks the dataset for `data.source`; `build_loader(...)`
wraps it in a `BatchLoader`, whose batch order is a pure function of (seed, epoch) and whose
augmentation is a pure function of (seed, epoch, index): any `num_workers` gives the same
batches. Workers are torch DataLoader processes with one thread each; they are started once and
persist across epochs (the batch sampler says which epoch they serve), prefetch two batches
each, and on CUDA hand over pinned memory. A dataset that decodes a whole batch at once
(`__getitems__`, the in-memory synthetic scenes) does so without per-sample work. The loader's own
`torch.Generator` keeps DataLoader from drawing on the global torch RNG, so iterating data never
changes a model's random stream. An error in a worker reaches the caller as the same one-line
`BadInput` it would be in the main process.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import DataLoader

from automtl_cli.data.base import LoadFailure, MultiTaskDataset, collate
from automtl_cli.data.cache import SceneCache
from automtl_cli.data.real import TRAIN_SPLITS, build_real_dataset
from automtl_cli.data.scenes import SyntheticDataset
from automtl_cli.errors import BadInput
from automtl_cli.experiment import SPLITS, DataConfig, DataSource
from automtl_cli.seeding import derive_seed

__all__ = ["BatchLoader", "build_dataset", "build_loader", "prepare_data"]


def build_dataset(data: DataConfig, tasks: Sequence[str], split: str, *,
                  cache_dir: str | os.PathLike | None = None, num_workers: int = 0,
                  count: int | None = None) -> MultiTaskDataset:
    """The dataset of `split` with the labels of `tasks`.

    For synthetic data, `count` overrides the split's size in the spec, scenes are generated
    into the cache (`cache_dir`, default `$AUTOMTL_CACHE` or ~/.cache/automtl) by
    `num_workers` processes; real datasets read their files lazily, per item.
    """
    if split not in SPLITS:
        raise BadInput(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    if data.source is DataSource.SYNTHETIC:
        return SyntheticDataset(data.synthetic, tasks, split, seed=data.seed, count=count,
                                cache_dir=cache_dir, num_workers=num_workers)
    return build_real_dataset(data, tasks, split)


def prepare_data(data: DataConfig) -> None:
    """Generate now whatever the loaders of every split would generate on first use (the
    synthetic scenes), so that processes started next find it made instead of each making it."""
    if data.source is DataSource.SYNTHETIC:
        for split in SPLITS:
            SceneCache(data.synthetic, data.seed).ensure(split, data.synthetic.count(split))


_STOP_SIGNALS = {getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, n)}


@contextmanager
def _stop_signals_held(hold: bool) -> Iterator[None]:
    """Hold (block) the stop signals while workers are forked, so that a signal sent to the
    whole process group in that instant waits, instead of killing a worker before it could
    ignore it; the main process receives it when the block ends."""
    if not hold or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# The workers this process started. They ignore SIGTERM, so multiprocessing's exit handler
# (SIGTERM, then join) would wait forever for any still running when the interpreter exits;
# this handler, registered later and so run first, kills them.
_WORKERS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _kill_workers() -> None:
    for process in list(_WORKERS):
        if process.is_alive():
            process.kill()
            process.join()


def _worker_init(_: int) -> None:
    """A data worker: one thread, and deaf to the signals a terminal or a scheduler sends the
    whole process group (Ctrl-C, `scancel`). The main process hears them, checkpoints, and
    shuts its workers down itself; a worker killed first would turn a clean stop into a crash.
    It starts with them held (see `_stop_signals_held`): ignored first, then released."""
    torch.set_num_threads(1)
    for s in _STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


class BatchLoader:
    """Batches of one split: `epoch(e)` for one pass, `forever()` for endless training."""

    def __init__(self, dataset: MultiTaskDataset, *, batch_size: int, seed: int = 0,
                 shuffle: bool = False, drop_last: bool = False, num_workers: int = 0,
                 rank: int = 0, world_size: int = 1, pin_memory: bool = False) -> None:
        if batch_size < 1:
            raise BadInput(f"batch size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = int(seed)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.rank = rank
        self.world_size = world_size
        self.pin_memory = pin_memory
        self._next_epoch = 0
        self._sampler = _EpochBatches(self)
        self._loader: DataLoader | None = None  # the persistent one, made at the first epoch
        self._busy = False  # an epoch of the persistent loader is being read
        if len(self) == 0:
            raise BadInput(f"the {dataset.split} split has {len(dataset)} samples, fewer than "
                           f"one batch of {batch_size}")

    def batches(self, epoch: int) -> list[list[tuple[int, int, int]]]:
        """The items (index, seed, epoch) of every batch this rank sees in `epoch`."""
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle \
            else np.arange(n)
        stop = n - n % self.batch_size if self.drop_last else n
        batches = [[(int(i), self.seed, epoch) for i in order[s:s + self.batch_size]]
                   for s in range(0, stop, self.batch_size)]
        # Training keeps every rank in step (equal batch counts); evaluation covers every item.
        usable = len(batches) - len(batches) % self.world_size \
            if self.world_size > 1 and self.drop_last else len(batches)
        return batches[self.rank:usable:self.world_size]

    def __len__(self) -> int:
        n = len(self.dataset)
        full = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        if self.drop_last:
            return full // self.world_size
        return len(range(self.rank, full, self.world_size))

    def _data_loader(self, sampler: _EpochBatches, persistent: bool) -> DataLoader:
        workers = self.num_workers
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=workers,
                          collate_fn=collate, pin_memory=self.pin_memory,
                          worker_init_fn=_worker_init if workers else None,
                          persistent_workers=persistent and workers > 0,
                          prefetch_factor=2 if workers else None,
                          generator=torch.Generator().manual_seed(derive_seed(self.seed, 0)))

    def epoch(self, epoch: int, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of `epoch`, from its `start`-th (a resumed run picks up mid-epoch)."""
        if self._busy:  # another epoch is still being read: a loader of its own
            sampler = _EpochBatches(self, epoch, start)
            loader, persistent = self._data_loader(sampler, False), False
        else:
            if self._loader is None:
                self._loader = self._data_loader(self._sampler, True)
            self._sampler.epoch, self._sampler.start = epoch, start
            loader, persistent = self._loader, True
            self._busy = True
        try:
            with _stop_signals_held(self.num_workers > 0):
                before = set(multiprocessing.active_children())
                batches = iter(loader)  # forks the workers (once), which inherit the held signals
                _WORKERS.update(set(multiprocessing.active_children()) - before)
            for batch in batches:
                if isinstance(batch, LoadFailure):
                    batch.raise_()
                yield batch
        finally:
            if persistent:
                self._busy = False

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        epoch = self._next_epoch
        self._next_epoch += 1
        return self.epoch(epoch)

    def forever(self, start_epoch: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        epoch = start_epoch
        while True:
            yield from self.epoch(epoch)
            epoch += 1


class _EpochBatches:
    """The batch sampler of a loader's persistent DataLoader: the batches of `epoch` from
    `start`, both set before each pass."""

    def __init__(self, loader: BatchLoader, epoch: int = 0, start: int = 0) -> None:
        self.loader, self.epoch, self.start = loader, epoch, start

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        return iter(self.loader.batches(self.epoch)[self.start:])

    def __len__(self) -> int:
        return max(len(self.loader) - self.start, 0)


def build_loader(data: DataConfig, tasks: Sequence[str], split: str, *, seed: int = 0,
                 batch_size: int | None = None, num_workers: int = 0,
                 shuffle: bool | None = None, drop_last: bool | None = None,
                 cache_dir: str | os.PathLike | None = None, count: int | None = None,
                 rank: int = 0, world_size: int = 1, pin_memory: bool = False) -> BatchLoader:
    """A loader for `split`: training splits shuffle and drop the last partial batch and use
    `data.batch_size`; `val` and `test` keep order and use `data.val_batch_size`."""
    train = split in TRAIN_SPLITS
    dataset = build_dataset(data, tasks, split, cache_dir=cache_dir, num_workers=num_workers,
                            count=count)
    size = batch_size or (data.batch_size if train else data.val_batch_size)
    return BatchLoader(dataset, batch_size=size, seed=seed,
                       shuffle=train if shuffle is None else shuffle,
                       drop_last=train if drop_last is None else drop_last,
                       num_workers=num_workers, rank=rank, world_size=world_size,
                       pin_memory=pin_memory)
