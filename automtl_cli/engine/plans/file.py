"""`--plan FILE`: a plan edited by hand, `{"choices": {node: {task: "shared|specific|skip"}}}`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from automtl_cli.compiler.derived import CHOICES
from automtl_cli.engine.plans.base import DERIVE_MODES, DeriveMode, PlanMaker, PlanRequest
from automtl_cli.errors import BadInput, MissingInput


@DERIVE_MODES.register(DeriveMode.FILE)
class FromFile(PlanMaker):
    uses_search_weights = True

    def table(self, request: PlanRequest) -> np.ndarray:
        path = Path(request.plan_file)
        if not path.is_file():
            raise MissingInput(f"{path}: no such plan file")
        try:
            data = json.loads(path.read_text())
            raw = data["choices"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise BadInput(f"{path}: not a plan (a JSON object with \"choices\"): {e}") from e
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

