"""`shared` and `specific`: the baselines' plans, the same choice everywhere."""

from __future__ import annotations

import numpy as np

from automtl_cli.engine.plans.base import DERIVE_MODES, DeriveMode, PlanMaker, PlanRequest


class Everywhere(PlanMaker):
    branch: int

    def table(self, request: PlanRequest) -> np.ndarray:
        return np.full((len(request.nodes), len(request.tasks)), self.branch, dtype=np.int64)


@DERIVE_MODES.register(DeriveMode.SHARED)
class HardSharing(Everywhere):
    branch = 0


@DERIVE_MODES.register(DeriveMode.SPECIFIC)
class SingleTask(Everywhere):
    branch = 1
