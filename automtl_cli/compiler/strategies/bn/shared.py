"""`--bn shared`: one BatchNorm (γ/β and running statistics) for all tasks."""

from __future__ import annotations

import torch

from automtl_cli.compiler.strategies.bn.base import BN_MODES, BnMode, BnStrategy
from automtl_cli.compiler.strategies.stage import StageStrategy

__all__ = ["SharedBatchNorm"]


@BN_MODES.register(BnMode.SHARED)
class SharedBatchNorm(BnStrategy):
    compute_sharing = "--bn shared: one BatchNorm for all tasks; shared prefixes run once"

    def has_task_copies(self, follows_search_node: bool) -> bool:
        return False

    def blend(self, pi: torch.Tensor, stage: StageStrategy, follows: int | None
              ) -> torch.Tensor | float:
        return 1.0

    def uses_task_copy(self, choice: int | None) -> bool:
        return False
