"""`--init pretrained`: the backbone's pretrained weights (`compile --weights`, or a PyTorch
module's own) for every branch the plan kept; the heads start from the seed."""

from __future__ import annotations

import torch

from automtl_cli.artifacts import DerivedModel
from automtl_cli.engine.inits.base import INITS, Init


@INITS.register(Init.PRETRAINED)
class FromPretrained:
    def weights(self, derived: DerivedModel) -> dict[str, torch.Tensor]:
        from automtl_cli.engine.derive import network_of  # the engine builds the network

        return network_of(derived, pretrained=True).state_dict()
