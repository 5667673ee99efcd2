"""One seeding discipline for every training loop: each step's random draws are keyed.

Randomness that the code controls directly takes an explicit generator: batch order is a
function of (seed, epoch), augmentation of (seed, epoch, index), Gumbel noise of (seed, step),
derive's candidates of the seed. What it cannot hand a generator to — dropout, stochastic depth,
anything in a head that calls `torch.rand` — draws from torch's global generators. Before every
step the loop re-seeds those (torch CPU and every CUDA device, numpy's and Python's global
generators) from `(seed, loop, rank, step)`, so a step's draws depend on nothing that came
before it: two runs with one seed agree, a resumed run continues the same streams, and data
parallel ranks draw different dropout masks from the same seed.
"""

from __future__ import annotations

import os
import random
import zlib

import numpy as np
import torch

__all__ = ["derive_seed", "enable_deterministic", "seed_globals", "stream_id"]


def stream_id(name: str) -> int:
    """A stable number for a named stream (a loop's name), the same in every process."""
    return zlib.crc32(name.encode("utf-8"))


def derive_seed(*keys: int) -> int:
    """A well-mixed 64-bit seed from integer keys (NumPy's SeedSequence; a negative key is
    taken modulo 2⁶⁴, so `--seed -1` works too)."""
    words = np.random.SeedSequence([int(k) % 2**64 for k in keys]).generate_state(2, np.uint32)
    return (int(words[0]) << 32) | int(words[1])


def seed_globals(*keys: int) -> None:
    """Seed torch (CPU and all CUDA devices), numpy's and Python's global generators."""
    seed = derive_seed(*keys)
    torch.manual_seed(seed)  # also every CUDA device's generator (lazily if CUDA is unused)
    np.random.seed(seed >> 32)
    random.seed(seed)


def enable_deterministic() -> None:
    """Deterministic kernels wherever torch has them (`--deterministic`).

    On CPU every kernel automtl uses is already deterministic for a fixed thread count. On CUDA,
    cuDNN's autotuner and some backward kernels (atomic adds in the weight gradients of
    grouped/transposed convolutions, `index_add`, bilinear upsampling's backward) are not; this
    turns the autotuner off, picks deterministic cuDNN algorithms, sets cuBLAS's workspace so
    its reductions are fixed, and selects torch's deterministic variants of the other ops; an op
    that has none (on CUDA, e.g. bilinear upsampling's backward) warns once instead of failing.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
