"""`--estimator`: how a search step's forward pass mixes the branches.

Each choice is one of the supermodel's forward stages (compiler/strategies/stage): the
estimator only picks which one the policy and weight steps run.
"""

from __future__ import annotations

from automtl_cli.compiler.strategies import Stage
from automtl_cli.registry import Choice

__all__ = ["Estimator"]


class Estimator(Choice):
    SOFT = "soft"  # the Gumbel-softmax mixture of every branch (the reference)
    GDAS = "gdas"  # only the sampled branch runs, with a straight-through gradient
    DARTS = "darts"  # softmax(α/τ) without Gumbel noise: DARTS' relaxation, the noise ablation

    @property
    def stage(self) -> Stage:
        """The supermodel forward stage that implements this estimator."""
        return Stage(self.value)
