"""Checks of an exported model against the PyTorch one: largest difference and latency.

A runtime is anything that maps an image batch `[B, C, H, W]` to one array per task, in task
order: the PyTorch network as trained, the folded fx graph, an onnxruntime session, a loaded
TorchScript module. Differences are absolute, over every task's output; latency is the median of
several timed runs after a warm-up, under `torch.no_grad`. Timings are reported, never asserted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

__all__ = ["Runtime", "compare", "example_batch", "median_latency_ms", "torch_runtime"]

Runtime = Callable[[torch.Tensor], Sequence[np.ndarray]]


def torch_runtime(module: torch.nn.Module, tasks: Sequence[str] | None = None) -> Runtime:
    """A PyTorch module as a runtime; `tasks` picks outputs of a module that returns a dict."""

    @torch.no_grad()
    def run(x: torch.Tensor) -> list[np.ndarray]:
        out = module(x)
        if tasks is not None:
            out = [out[t] for t in tasks]
        return [o.detach().cpu().numpy() for o in out]

    return run


def example_batch(shape: Sequence[int], batch: int, seed: int = 0) -> torch.Tensor:
    """A seeded batch of normalised-looking images (N(0, 1)) of the network's input shape."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape[1:], generator=generator)


def compare(reference: Runtime, candidate: Runtime, batches: Sequence[torch.Tensor],
            tasks: Sequence[str]) -> dict[str, float]:
    """The largest absolute difference per task over `batches` (shapes must agree exactly)."""
    worst = dict.fromkeys(tasks, 0.0)
    for x in batches:
        for task, ref, got in zip(tasks, reference(x), candidate(x)):
            if ref.shape != got.shape:
                raise ValueError(f"task {task!r}: shape {list(got.shape)} for batch "
                                 f"{x.shape[0]}, expected {list(ref.shape)}")
            worst[task] = max(worst[task], float(np.abs(ref - got).max(initial=0.0)))
    return worst


def median_latency_ms(runtime: Runtime, x: torch.Tensor, *, runs: int = 20,
                      warmup: int = 3) -> float:
    """Median wall-clock milliseconds of `runtime(x)` over `runs` calls, after `warmup` calls."""
    for _ in range(warmup):
        runtime(x)
    times = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        runtime(x)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
