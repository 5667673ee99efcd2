"""`--estimator`: how a search step's forward pass mixes the branches.

Each choice is one of the supermodel's forward stages (compiler/supermodel): the estimator only
picks which one the policy and weight steps run.
"""

from __future__ import annotations

import enum

__all__ = ["Estimator"]


class Estimator(str, enum.Enum):
    SOFT = "soft"  # the Gumbel-softmax mixture of every branch (the reference)
    GDAS = "gdas"  # only the sampled branch runs, with a straight-through gradient

    def __str__(self) -> str:
        return self.value

    @property
    def stage(self) -> str:
        """The supermodel forward stage that implements this estimator."""
        return self.value
