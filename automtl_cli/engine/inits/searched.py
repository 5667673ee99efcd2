"""`--init search`: the derived model's stored weights (the search's, for the kept branches)."""

from __future__ import annotations

import torch

from automtl_cli.artifacts import DerivedModel
from automtl_cli.engine.inits.base import INITS, Init


@INITS.register(Init.SEARCH)
class FromSearch:
    def weights(self, derived: DerivedModel) -> dict[str, torch.Tensor]:
        return derived.state_dict

