"""Where a derived network's plan comes from: the `derive` modes and their interface."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from automtl_cli.choices import DeriveMode
from automtl_cli.registry import Registry

__all__ = ["DERIVE_MODES", "DeriveMode", "PlanMaker", "PlanRequest"]


@dataclass(frozen=True)
class PlanRequest:
    nodes: list[str]
    tasks: tuple[str, ...]
    logits: torch.Tensor | None  # the search's [S, T, 3], when there is a search
    seed: int
    plan_file: str | os.PathLike | None = None


class PlanMaker:
    """One derive mode. Subclasses say what they need and implement `table`."""

    needs_search: ClassVar[bool] = False  # refuses to run without a search checkpoint
    uses_search_weights: ClassVar[bool] = False  # start from the searched weights (if any)
    seeded: ClassVar[bool] = False  # the plan depends on the seed (recorded in its source)

    def table(self, request: PlanRequest) -> np.ndarray:
        """[S, T] branch indices (0 shared, 1 specific, 2 skip)."""
        raise NotImplementedError

    def source(self, mode: DeriveMode, request: PlanRequest) -> dict[str, Any]:
        """What plan.json records of how the plan was made."""
        return {"mode": mode.value, "seed": request.seed if self.seeded else None}


DERIVE_MODES: Registry[PlanMaker] = Registry("derive mode", DeriveMode)
