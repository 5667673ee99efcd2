"""The formulas of the sharing regularisers (the modules beside this one choose between them).

`reference` is AutoMTL's (docs/method.md §3): for each task t and search node n, a fresh
Gumbel-softmax sample π̃ of the logits, and

    R_t = Σ_n w_n · [softplus(s·(π̃₁ − π̃₀)) + softplus(s·(π̃₂ − π̃₀))],   w_n = (D − d_n) / D,

with s = 6 and D the deepest node's depth: sharing is pushed hardest near the input and not at all
at the last node, and a skip is penalised as much as a task copy.

`params` is resource-aware: the expected parameter count of the derived network under the
policy distribution softmax(α), divided by that of T single-task networks. A node's shared op is
paid once if any task uses it, a task copy per task that picks it, a skip what its branch holds
(often nothing). With a target fraction, only the excess over the target is penalised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ParamsRegularizer", "depth_weights", "reference_regularizer"]


def reference_regularizer(logits: torch.Tensor, noise: torch.Tensor, tau: float,
                          depth_weights: torch.Tensor, scale: float = 6.0) -> torch.Tensor:
    """R_t per task, shape [T], from logits [S, T, 3], noise [S, T, 3] and weights [S]."""
    pi = torch.softmax((logits + noise) / tau, dim=-1)
    gap = scale * (pi[..., 1:] - pi[..., :1])  # [S, T, 2]: specific − shared, skip − shared
    per_node = F.softplus(gap).sum(-1)  # [S, T]
    return (depth_weights.unsqueeze(1) * per_node).sum(0)


def depth_weights(depths: list[int]) -> torch.Tensor:
    deepest = max(depths)
    return torch.tensor([(deepest - d) / deepest for d in depths], dtype=torch.float32)


class ParamsRegularizer:
    """Expected parameters of the derived network, as a fraction of T single-task networks."""

    def __init__(self, shared: list[int], skip: list[int], tasks: int,
                 target: float | None = None) -> None:
        self.shared = torch.tensor(shared, dtype=torch.float32)  # [S]
        self.skip = torch.tensor(skip, dtype=torch.float32)  # [S] per task
        self.total = float(tasks * sum(shared)) or 1.0
        self.target = target

    def expected_fraction(self, logits: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(logits, dim=-1)  # [S, T, 3]
        shared, skip = self.shared.to(p.device), self.skip.to(p.device)
        anyone_shares = 1.0 - torch.prod(1.0 - p[..., 0], dim=1)  # [S]
        expected = (anyone_shares * shared + p[..., 1].sum(1) * shared
                    + p[..., 2].sum(1) * skip).sum()
        return expected / self.total

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        fraction = self.expected_fraction(logits)
        if self.target is None:
            return fraction
        return F.relu(fraction - self.target)
