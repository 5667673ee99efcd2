"""A plan: per search node and task, which branch the derived network keeps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from automtl_cli.compiler.derived import CHOICES

__all__ = ["Plan"]


@dataclass
class Plan:
    tasks: tuple[str, ...]
    choices: dict[str, list[int]]  # search node → per task: 0 shared, 1 specific, 2 skip
    source: dict[str, Any]  # how it was made (mode, seed, file, search step)

    def to_json_choices(self) -> dict[str, dict[str, str]]:
        return {node: {t: CHOICES[c] for t, c in zip(self.tasks, row)}
                for node, row in self.choices.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "choices": self.choices, "source": self.source}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        return cls(tuple(d["tasks"]), {k: list(v) for k, v in d["choices"].items()},
                   d["source"])
