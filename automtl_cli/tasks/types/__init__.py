"""Task types, one module per `TaskType` (docs/adding-a-strategy.md)."""

from automtl_cli.tasks.types import depth, edge, edge2d, keypoint, normal, seg  # noqa: F401
from automtl_cli.tasks.types.base import TASK_TYPE_STRATEGIES, TaskType, TaskTypeStrategy

__all__ = ["TASK_TYPE_STRATEGIES", "TaskType", "TaskTypeStrategy"]

TASK_TYPE_STRATEGIES.check_complete()
