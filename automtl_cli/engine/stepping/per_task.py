"""`--step per-task`: the reference's loop, one optimiser step per task on its own batch.

The logits move after every task's step, so the branch weights π (and the regulariser) are
drawn again before the next task's forward pass.
"""

from __future__ import annotations

import torch

from automtl_cli.engine.stepping.base import STEPPINGS, SearchState, StepMode


@STEPPINGS.register(StepMode.PER_TASK)
class PerTaskStep:
    def updates_per_iteration(self, tasks: int) -> int:
        return tasks

    def step(self, state: SearchState, *, split: str, stage: str, tau: float, policy: bool,
             reg_weight: float, optimizer: torch.optim.Optimizer,
             params: list[torch.nn.Parameter]) -> tuple[torch.Tensor, torch.Tensor | None]:
        losses = []
        last = len(state.tasks) - 1
        pi = state.branch_weights(stage, tau)  # None when the stage does not mix branches
        regs = state.regulariser(tau) if policy else None
        reg_total = regs.sum().detach() if regs is not None else None
        for i, task in enumerate(state.tasks):
            batch = state.batch(split)
            task_loss = task.loss(state.forward_task(batch["image"], i, stage, pi), batch)
            loss = state.loss_weights[i] * task_loss
            if regs is not None:
                loss = loss + reg_weight * (regs[i] if regs.numel() > 1 else regs[0])
            state.apply(loss, optimizer, params)
            losses.append(task_loss.detach())
            if pi is not None and i < last:
                pi = state.branch_weights(stage, tau)
                regs = state.regulariser(tau) if policy else None
        return torch.stack(losses), reg_total

