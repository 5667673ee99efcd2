"""`hard`: one branch per node and task, from a given policy or the logits' argmax."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from automtl_cli.compiler.strategies.stage.base import STAGES, PolicySource, Stage, StageStrategy

__all__ = ["Hard"]


@STAGES.register(Stage.HARD)
class Hard(StageStrategy):
    one_hot = True

    def branch_weights(self, source: PolicySource, *, tau: float, noise: torch.Tensor | None,
                       policy: torch.Tensor | None, generator: torch.Generator | None
                       ) -> torch.Tensor:
        s, t = source.policy_shape
        if policy is None:
            policy = source.logits().detach().argmax(-1)  # ties go to shared (index 0)
        policy = policy.to(source.policy_device)
        if policy.dim() == 2:
            policy = F.one_hot(policy.long(), 3)
        if tuple(policy.shape) != (s, t, 3):
            raise ValueError(f"a policy must be [{s}, {t}] choices or [{s}, {t}, 3] one-hot, "
                             f"got {list(policy.shape)}")
        return policy.float()
