"""`sample` (from the searched policy, the reference's way) and `random` (uniform)."""

from __future__ import annotations

import numpy as np
import torch

from automtl_cli.engine.plans.base import DERIVE_MODES, DeriveMode, PlanMaker, PlanRequest


def draw(probs: np.ndarray, seed: int) -> np.ndarray:
    """One draw per node and task, in (node, task) order, from a generator seeded by `seed`."""
    rng = np.random.default_rng(seed)
    s, t = probs.shape[:2]
    return np.array([[rng.choice(3, p=probs[i, j] / probs[i, j].sum()) for j in range(t)]
                     for i in range(s)], dtype=np.int64)


@DERIVE_MODES.register(DeriveMode.SAMPLE)
class FromPolicy(PlanMaker):
    needs_search = uses_search_weights = seeded = True

    def table(self, request: PlanRequest) -> np.ndarray:
        probs = torch.softmax(request.logits.double(), dim=-1).numpy()
        return draw(probs, request.seed)


@DERIVE_MODES.register(DeriveMode.RANDOM)
class Uniform(PlanMaker):
    seeded = True

    def table(self, request: PlanRequest) -> np.ndarray:
        logits = torch.zeros(len(request.nodes), len(request.tasks), 3)
        return draw(torch.softmax(logits.double(), dim=-1).numpy(), request.seed)
