"""`--plan FILE`: a plan edited by hand, `{"choices": {node: {task: "shared|specific|skip"}}}`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from automtl_cli.compiler.derived import CHOICES
from automtl_cli.engine.plans.base import DERIVE_MODES, DeriveMode, PlanMaker, PlanRequest
from automtl_cli.errors import BadInput, MissingInput


def read_choices(path: Path) -> dict[str, dict[str, Any]]:
    """The `choices` of a plan file, checked to be {node: {task: name}} (BOM tolerated)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise BadInput(f"{path}: not a plan: not UTF-8 text (byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: not a plan: invalid JSON at line {e.lineno}, column "
                       f"{e.colno} ({e.msg})") from e
    except OSError as e:
        raise BadInput(f"{path}: cannot read it ({e.strerror or e})") from e
    if not isinstance(data, dict) or "choices" not in data:
        raise BadInput(f"{path}: not a plan: expected a JSON object with \"choices\"")
    raw = data["choices"]
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: \"choices\" must be an object {{node: {{task: branch}}}}, "
                       f"got {type(raw).__name__}")
    for node, row in raw.items():
        if not isinstance(row, dict):
            raise BadInput(f"{path}: \"choices\".{node} must be an object {{task: branch}}, "
                           f"got {type(row).__name__}")
    return raw


@DERIVE_MODES.register(DeriveMode.FILE)
class FromFile(PlanMaker):
    uses_search_weights = True

    def table(self, request: PlanRequest) -> np.ndarray:
        path = Path(request.plan_file)
        if not path.is_file():
            raise MissingInput(f"{path}: no such plan file")
        raw = read_choices(path)
        unknown = [n for n in raw if n not in request.nodes]
        if unknown:
            raise BadInput(f"{path}: unknown search node(s) {', '.join(unknown[:5])}")
        rows = []
        for node in request.nodes:
            row = raw.get(node)
            if not isinstance(row, dict):
                raise BadInput(f"{path}: no choices for search node {node!r}")
            out = []
            for task in request.tasks:
                value = row.get(task)
                if value not in CHOICES:
                    raise BadInput(f"{path}: node {node!r}, task {task!r}: expected one of "
                                   f"{', '.join(CHOICES)}, got {value!r}")
                out.append(CHOICES.index(value))
            rows.append(out)
        return np.array(rows, dtype=np.int64).reshape(len(request.nodes), len(request.tasks))

    def source(self, mode: DeriveMode, request: PlanRequest) -> dict[str, Any]:
        return {"mode": mode.value, "file": str(Path(request.plan_file))}

