"""`--estimator`: how a search step's forward pass mixes the branches.

Each choice is one of the supermodel's forward stages (compiler/strategies/stage): the
estimator only picks which one the policy and weight steps run.
"""

from __future__ import annotations

from automtl_cli.choices import Estimator

__all__ = ["Estimator"]
