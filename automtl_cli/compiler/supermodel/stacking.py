"""Tensors stacked over tasks in memory, saved under one readable key per task.

Stacking (first dim T) is what lets one kernel serve all tasks; per-task keys
(`task.depth.weight`) are what a user reads in a checkpoint. The two state-dict hooks convert
between the layouts on save and load.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["TaskStacked"]


class TaskStacked(nn.Module):
    """A module holding some tensors stacked over tasks, saved under per-task keys.

    `_stacked` maps an attribute to its key template, e.g. `{"task_weight": "task.{task}.weight"}`.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self._stacked: dict[str, str] = {}
        self.register_state_dict_post_hook(_split_stacked)
        self.register_load_state_dict_pre_hook(_join_stacked)


def _split_stacked(module: TaskStacked, state: dict, prefix: str, local_metadata) -> None:
    for attr, template in module._stacked.items():
        tensor = state.pop(prefix + attr, None)
        if tensor is None:
            continue
        for t, task in enumerate(module.tasks):
            state[prefix + template.format(task=task)] = tensor[t]


def _join_stacked(module: TaskStacked, state: dict, prefix: str, local_metadata, strict,
                  missing_keys, unexpected_keys, error_msgs) -> None:
    for attr, template in module._stacked.items():
        keys = [prefix + template.format(task=task) for task in module.tasks]
        present = [k for k in keys if k in state]
        if not present:
            continue
        if len(present) != len(keys):
            missing_keys.extend(k for k in keys if k not in state)
            for k in present:
                state.pop(k)
            continue
        state[prefix + attr] = torch.stack([state.pop(k) for k in keys])
