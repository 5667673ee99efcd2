"""`--init scratch`: keep the weights the network was built with from the run's seed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from automtl_cli.engine.inits.base import INITS, Init


class FromSeed:
    def weights(self, derived: Mapping[str, Any]) -> None:
        return None


INITS.register(Init.SCRATCH)(FromSeed())
