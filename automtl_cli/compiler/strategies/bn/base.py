"""The `--bn` axis: how a BatchNorm after a search node is shared between tasks.

A strategy answers the three questions every `--bn` rule used to answer in its own file: does a
BatchNorm get per-task copies (`has_task_copies`), how much of the shared BN's γ/β the
supermodel blends in for each task (`blend`), and whether a derived or extracted task network
uses its own copy (`uses_task_copy`). Statistics are per task in every mode; see
`docs/method.md` for the reference's rule.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch

from automtl_cli.choices import BnMode
from automtl_cli.registry import Registry

if TYPE_CHECKING:
    from automtl_cli.compiler.strategies.stage import StageStrategy

__all__ = ["BN_MODES", "BnMode", "BnStrategy"]


class BnStrategy(ABC):
    """One `--bn` choice, asked about one BatchNorm and the search node it directly and solely
    follows, if any (`follows`: that node's index in π)."""

    name: ClassVar[BnMode]
    compute_sharing: ClassVar[str]  # plan.json's note on what the derived network computes once

    @abstractmethod
    def has_task_copies(self, follows_search_node: bool) -> bool:
        """Whether the BN keeps per-task γ/β and running statistics beside the shared ones."""

    @abstractmethod
    def blend(self, pi: torch.Tensor, stage: StageStrategy, follows: int | None
              ) -> torch.Tensor | float:
        """The shared BN's weight a (per task `[T]`, or one float): a·BN_shared + (1−a)·BN_t.

        Asked only of a BN with task copies; `pi` is the `[S, T, 3]` branch weights.
        """

    @abstractmethod
    def uses_task_copy(self, choice: int | None) -> bool:
        """Whether a task uses its own BN; `choice` is the branch (0 shared, 1 specific, 2 skip)
        the task took at the followed search node, None if the BN follows none."""


BN_MODES: Registry[BnStrategy] = Registry("bn", BnMode)
