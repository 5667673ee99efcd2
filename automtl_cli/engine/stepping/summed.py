"""`--step sum`: every task on one batch, one optimiser step on the weighted sum."""

from __future__ import annotations

import torch

from automtl_cli.engine.stepping.base import STEPPINGS, SearchState, StepMode


@STEPPINGS.register(StepMode.SUM)
class SummedStep:
    def updates_per_iteration(self, tasks: int) -> int:
        return 1

    def step(self, state: SearchState, *, split: str, stage: str, tau: float, policy: bool,
             reg_weight: float, optimizer: torch.optim.Optimizer,
             params: list[torch.nn.Parameter]) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch = state.batch(split)
        preds = state.forward(batch["image"], stage, tau)
        losses = torch.stack([t.loss(preds[t.name], batch) for t in state.tasks])
        loss = (state.loss_weights * losses).sum()
        reg = None
        if policy:
            reg = state.regulariser(tau).sum()
            loss = loss + reg_weight * reg
        state.apply(loss, optimizer, params)
        return losses.detach(), reg

