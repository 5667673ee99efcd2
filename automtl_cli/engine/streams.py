"""An endless, resumable stream of batches over one split: its position is (epoch, offset)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from automtl_cli.data.loader import BatchLoader

__all__ = ["BatchStream"]


class BatchStream:
    """Batches of a `BatchLoader`, epoch after epoch, from any saved position."""

    def __init__(self, loader: BatchLoader, epoch: int = 0, offset: int = 0) -> None:
        self.loader = loader
        self.epoch, self.offset = epoch, offset
        self._it: Iterator[dict[str, torch.Tensor]] | None = None

    def position(self) -> list[int]:
        return [self.epoch, self.offset]

    def __next__(self) -> dict[str, torch.Tensor]:
        while True:
            if self._it is None:
                self._it = self.loader.epoch(self.epoch, start=self.offset)
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                self.epoch, self.offset = self.epoch + 1, 0
                continue
            self.offset += 1
            return batch

    def __iter__(self) -> BatchStream:
        return self
