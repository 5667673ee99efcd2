"""`--init scratch`: keep the weights the network was built with from the run's seed."""

from __future__ import annotations

from automtl_cli.artifacts import DerivedModel
from automtl_cli.engine.inits.base import INITS, Init


@INITS.register(Init.SCRATCH)
class FromSeed:
    def weights(self, derived: DerivedModel) -> None:
        return None

