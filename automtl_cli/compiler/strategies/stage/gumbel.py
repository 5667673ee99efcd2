"""Gumbel noise for the sampling stages: drawn from (seed, step) alone, or from a generator."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["gumbel_noise", "gumbel_softmax"]


def _from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) from uniform samples, clamped away from log(0)."""
    return -torch.log(-torch.log(u.clamp(1e-20, 1.0)))


def gumbel_noise(shape: Sequence[int], seed: int, step: int) -> torch.Tensor:
    """Gumbel(0, 1) noise drawn from (seed, step) alone: resumed and distributed runs agree."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2 ** 63))
    u = torch.rand(tuple(shape), generator=g, dtype=torch.float64)
    return _from_uniform(u).float()


def gumbel_softmax(logits: torch.Tensor, tau: float, noise: torch.Tensor | None,
                   generator: torch.Generator | None) -> torch.Tensor:
    """softmax((logits + g) / τ), with Gumbel noise g given or drawn from `generator`."""
    if noise is None:
        u = torch.rand(logits.shape, generator=generator, device=logits.device)
        noise = _from_uniform(u)
    return torch.softmax((logits + noise.to(logits.device)) / tau, dim=-1)
