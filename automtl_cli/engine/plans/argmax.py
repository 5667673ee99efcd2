"""`argmax`: the most likely branch of the searched policy, per node and task."""

from __future__ import annotations

import numpy as np
import torch

from automtl_cli.engine.plans.base import DERIVE_MODES, DeriveMode, PlanMaker, PlanRequest


@DERIVE_MODES.register(DeriveMode.ARGMAX)
class MostLikely(PlanMaker):
    needs_search = uses_search_weights = True

    def table(self, request: PlanRequest) -> np.ndarray:
        return torch.softmax(request.logits.double(), dim=-1).numpy().argmax(-1)

