"""The compile stage: a backbone (a prototxt or a PyTorch module, `automtl_cli.frontend.sources`)
→ RUN/supermodel.pt (the IR, its source and its search space) and RUN/compile.json (the summary
and layer table)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from automtl_cli.artifacts import SupermodelArtifact, check_writable, load, write_json
from automtl_cli.artifacts.lock import run_lock
from automtl_cli.compiler.space import SearchSpace, space_summary
from automtl_cli.compiler.strategies import BnMode, SkipMode
from automtl_cli.errors import BadInput, SourceError
from automtl_cli.frontend.build import CompileOptions, FrontEndResult
from automtl_cli.frontend.ir import Graph
from automtl_cli.frontend.ops import LAYER_KINDS
from automtl_cli.frontend.sources import build_source

__all__ = ["CompileResult", "compile_backbone", "compile_front", "compile_stage", "layer_table",
           "load_supermodel"]


@dataclass
class CompileResult:
    front: FrontEndResult
    options: CompileOptions
    compile_ms: float
    space: SearchSpace | None = None  # None when no tasks were given yet
    bn: str = BnMode.TASK.value
    skip: str = SkipMode.REFERENCE.value
    seed: int = 0
    space_info: dict[str, Any] | None = None
    source: dict[str, str] = field(default_factory=dict)  # what the run keeps of its source

    @property
    def graph(self) -> Graph:
        return self.front.graph

    def summary(self) -> dict[str, Any]:
        g = self.graph
        shapes = g.value_shapes()
        return {
            "file": g.file,
            "name": g.name,
            "dialect": self.front.dialect.name,
            "dialect_reason": self.front.dialect.reason,
            "inputs": {self._blob(v): list(s) for v, s in g.inputs.items()},
            "feature_blob": self._blob(g.output),
            "output_shape": list(g.shape_of(g.output)),
            "outputs": {self._blob(v): list(g.shape_of(v)) for v in g.outputs},
            "params": g.params,
            "layers": g.source_layers,
            "nodes": len(g.nodes),
            "searchable": len(g.searchable),
            "max_depth": g.max_depth,
            "compile_ms": round(self.compile_ms, 3),
            "blobs": {name: list(shapes[v]) for name, v in g.blobs.items()},
            "seed": self.seed,
            "weights": self.weights_origin(),
            "bn": self.bn,
            "skip": self.skip,
            **({"supermodel": self.space_info} if self.space_info is not None else {}),
            "notes": list(self.front.notes),
            "warnings": list(self.front.warnings),
        }

    def weights_origin(self) -> str | None:
        """Where the initial weights come from: a file, the module's own, or None (the seed)."""
        if not self.front.weights:
            return None
        return self.options.weights or "the module's own"

    def _blob(self, value: str) -> str:
        for name, v in self.graph.blobs.items():
            if v == value:
                return name
        return value


def compile_backbone(path: str | os.PathLike, options: CompileOptions | None = None, *,
                     tasks: tuple[str, ...] = (), bn: str = BnMode.TASK.value,
                     skip: str = SkipMode.REFERENCE.value,
                     seed: int = 0, warn: Callable[[str], None] | None = None) -> CompileResult:
    """Front end plus, when tasks are given, the search space's size (no network is built)."""
    options = options or CompileOptions()
    front, source = build_source(os.fspath(path), options, warn=warn)
    return compile_front(front, source, options, tasks=tasks, bn=bn, skip=skip, seed=seed)


def compile_front(front: FrontEndResult, source: dict[str, str], options: CompileOptions, *,
                  tasks: tuple[str, ...] = (), bn: str = BnMode.TASK.value,
                  skip: str = SkipMode.REFERENCE.value, seed: int = 0) -> CompileResult:
    """A front end's graph checked against what the tasks' search needs, with its space's
    size (any front end: a file, a module object of the Python API)."""
    t0 = time.perf_counter()
    space = info = None
    if tasks:
        try:
            space = SearchSpace(tuple(tasks), bn, skip)
        except ValueError as e:
            raise BadInput(str(e)) from e
        if len(front.graph.inputs) != 1:
            raise BadInput(f"{front.graph.file}: a multi-task supermodel needs exactly one "
                           f"input, the network has {len(front.graph.inputs)}")
        if len(front.graph.outputs) != 1:
            raise BadInput(f"{front.graph.file}: a multi-task supermodel needs one feature "
                           f"blob, the network has {len(front.graph.outputs)} outputs; pick one "
                           "with --feature-blob")
        check_searchable(front.graph)
        info = space_summary(front.graph, space)
    elapsed = front.elapsed_ms + (time.perf_counter() - t0) * 1e3
    return CompileResult(front, options, elapsed, space, bn, skip, seed, info, source)


# The largest blob a supermodel is built for, per image: 2²⁸ values (1 GiB in float32). A
# mistyped pad or size gets there long before a real backbone does (ResNet-50's largest map at
# 224 px holds 802,816 values).
MAX_BLOB_VALUES = 1 << 28
DATA_CHANNELS = 3  # every dataset automtl reads is RGB


def check_searchable(graph: Graph) -> None:
    """What `search` will need of the backbone, checked at compile with the layer's FILE:LINE:
    RGB input, a 4-D feature map, ops that can run over the tasks' stacked batch, sane sizes."""
    (value, shape), = graph.inputs.items()
    if len(shape) != 4 or shape[1] != DATA_CHANNELS:
        raise BadInput(f"{graph.file}: input {graph_input_name(graph, value)} is "
                       f"{list(shape)}; the tasks' data are RGB images, N×{DATA_CHANNELS}×H×W")
    by_output = {v: n for n in graph.nodes for v in n.outputs}
    feature = by_output.get(graph.output)
    out_shape = graph.shape_of(graph.output)
    if len(out_shape) != 4:
        message = (f"the feature blob is {list(out_shape)}; task heads need a 4-D map "
                   "N×C×H×W: cut before the classifier with --feature-blob")
        if feature is None:
            raise BadInput(f"{graph.file}: {message}")
        raise SourceError(message, file=graph.file, line=feature.line, layer=feature.name,
                          layer_type=feature.type)
    shapes = graph.value_shapes()
    for node in graph.nodes:
        in_shapes = [shapes[v] for v in node.inputs]
        conflict = LAYER_KINDS[node.type].task_stacking_conflict(node.attrs, in_shapes)
        big = next((s for s in node.shapes if math.prod(s[1:]) > MAX_BLOB_VALUES), None)
        if conflict or big:
            message = conflict or (f"output {list(big)} holds {math.prod(big[1:]):,} values per "
                                   f"image, above the limit of {MAX_BLOB_VALUES:,}")
            raise SourceError(message, file=graph.file, line=node.line, layer=node.name,
                              layer_type=node.type)


def compile_stage(result: CompileResult, run_dir: str | os.PathLike) -> dict[str, str]:
    """Write RUN/supermodel.pt (graph, search space, pretrained weights if any) and
    RUN/compile.json."""
    with run_lock(run_dir):
        return _compile_stage(result, run_dir)


def _compile_stage(result: CompileResult, run_dir: str | os.PathLike) -> dict[str, str]:
    run = Path(run_dir)
    for name in ("supermodel.pt", "compile.json"):
        check_writable(run / name)
    summary = result.summary()
    artifact = SupermodelArtifact(
        graph=result.graph,
        source=dict(result.source),
        dialect=result.front.dialect.name,
        options={
            "dialect": result.options.dialect,
            "input_shapes": {str(k) if k is not None else "": list(v)
                             for k, v in result.options.input_shapes.items()},
            "feature_blob": result.options.feature_blob,
            "lenient": result.options.lenient,
            "weights": result.options.weights,
        },
        input_shape=summary["inputs"], feature_blob=summary["feature_blob"], seed=result.seed,
        bn=result.bn, skip=result.skip,
        tasks=tuple(result.space.tasks) if result.space else (), weights=result.front.weights)
    supermodel = artifact.save(run / "supermodel.pt")
    report = write_json(run / "compile.json", {
        **summary,
        "sha256": artifact.source["sha256"],
        "layer_table": layer_table(result.graph),
    })
    return {"supermodel": str(supermodel), "compile_json": str(report)}


def load_supermodel(path: str | os.PathLike) -> SupermodelArtifact:
    return load(path, SupermodelArtifact)


def layer_table(graph: Graph) -> list[dict[str, Any]]:
    rows = [{"name": graph_input_name(graph, v), "type": "Input", "output_shape": list(s),
             "params": 0, "searchable": False, "line": None} for v, s in graph.inputs.items()]
    for n in graph.nodes:
        rows.append({
            "name": n.name if not n.folded else f"{n.name}+{'+'.join(n.folded)}",
            "type": n.type, "output_shape": [list(s) for s in n.shapes] if len(n.shapes) > 1
            else list(n.shapes[0]), "params": n.params, "searchable": n.searchable,
            "depth": n.depth, "line": n.line,
        })
    return rows


def graph_input_name(graph: Graph, value: str) -> str:
    return value.split("@")[0]
