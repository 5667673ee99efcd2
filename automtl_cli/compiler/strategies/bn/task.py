"""`--bn task`, the AutoMTL reference's rule: a shared BN, used only in the warm-up, beside one BN
per task that every task uses afterwards; derived paths part at the first BatchNorm."""

from __future__ import annotations

import torch

from automtl_cli.compiler.strategies.bn.base import BN_MODES, BnMode, BnStrategy
from automtl_cli.compiler.strategies.stage import StageStrategy

__all__ = ["TaskBatchNorm"]


@BN_MODES.register(BnMode.TASK)
class TaskBatchNorm(BnStrategy):
    compute_sharing = ("--bn task: every task has its own BatchNorm, so task paths part at the "
                       "first BatchNorm; shared layers save parameters but not compute")

    def has_task_copies(self, follows_search_node: bool) -> bool:
        return True

    def blend(self, pi: torch.Tensor, stage: StageStrategy, follows: int | None
              ) -> torch.Tensor | float:
        # The warm-up averages every branch, and the reference averages the two BNs with them.
        return 0.5 if stage.averages else 0.0

    def uses_task_copy(self, choice: int | None) -> bool:
        return True
