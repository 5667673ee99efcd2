"""`--bn follow`: a BN right after a search node follows that node's branch (the shared BN for the
shared branch, the task's BN otherwise); every other BN is shared, so a shared prefix of the
derived network runs once for all tasks."""

from __future__ import annotations

import torch

from automtl_cli.compiler.strategies.bn.base import BN_MODES, BnMode, BnStrategy
from automtl_cli.compiler.strategies.stage import StageStrategy

__all__ = ["FollowBatchNorm"]


@BN_MODES.register(BnMode.FOLLOW)
class FollowBatchNorm(BnStrategy):
    compute_sharing = ("--bn follow: a BatchNorm after a shared convolution is shared too, so "
                       "the prefix the tasks share runs once for all of them")

    def has_task_copies(self, follows_search_node: bool) -> bool:
        return follows_search_node

    def blend(self, pi: torch.Tensor, stage: StageStrategy, follows: int | None
              ) -> torch.Tensor | float:
        return pi[follows, :, 0]  # the weight of the shared branch it follows

    def uses_task_copy(self, choice: int | None) -> bool:
        return choice is not None and choice != 0
