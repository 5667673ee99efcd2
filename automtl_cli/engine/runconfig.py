"""From a run directory and its experiment to what a stage needs: the graph at the data's size,
the search space, and the identity a checkpoint must match to be resumed (the experiment itself
comes from `automtl_cli.experiment.build_stage_experiment`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automtl_cli.artifacts import SupermodelArtifact, load
from automtl_cli.compiler.space import SearchSpace
from automtl_cli.errors import BadInput, MissingInput
from automtl_cli.experiment import DataSource, ExperimentConfig
from automtl_cli.frontend.build import CompileOptions
from automtl_cli.frontend.ir import Graph
from automtl_cli.frontend.sources import rebuild_graph

__all__ = ["RunSetup", "read_supermodel", "setup_run"]


def input_size(experiment: ExperimentConfig) -> tuple[int, int]:
    data = experiment.data
    if data.source is DataSource.SYNTHETIC:
        return (data.synthetic.image_size, data.synthetic.image_size)
    return tuple(data.crop_size)


@dataclass
class RunSetup:
    run_dir: Path
    supermodel: SupermodelArtifact
    graph: Graph  # the backbone, shapes inferred at the data's input size
    space: SearchSpace
    experiment: ExperimentConfig

    def run_id(self) -> dict[str, Any]:
        return {"supermodel_sha256": self.supermodel.source["sha256"],
                "tasks": list(self.space.tasks), "bn": self.space.bn, "skip": self.space.skip}


def read_supermodel(run_dir: str | os.PathLike) -> SupermodelArtifact:
    """RUN/supermodel.pt, or a MissingInput that says how to make it."""
    path = Path(run_dir) / "supermodel.pt"
    if not path.exists():
        raise MissingInput(f"{path}: no such file; run `automtl compile BACKBONE -o {run_dir}` "
                           "first")
    return load(path, SupermodelArtifact)


def setup_run(run_dir: str | os.PathLike, experiment: ExperimentConfig,
              batch_size: int, supermodel: SupermodelArtifact | None = None) -> RunSetup:
    """The run's graph at this batch size and its search space (`supermodel`: the already
    loaded RUN/supermodel.pt, so a command reads it once)."""
    run = Path(run_dir)
    path = run / "supermodel.pt"
    data = supermodel if supermodel is not None else read_supermodel(run)
    task_names = tuple(t.type for t in experiment.tasks)
    if data.tasks and data.tasks != task_names:
        raise BadInput(f"{path} was compiled for tasks {','.join(data.tasks)}, "
                       f"this run asks for {','.join(task_names)}")
    try:
        space = SearchSpace(task_names, data.bn, data.skip)
    except ValueError as e:
        raise BadInput(str(e)) from e
    graph = data.graph
    if len(graph.inputs) != 1:
        raise BadInput(f"{path}: a supermodel needs a backbone with exactly one input")
    channels = next(iter(graph.inputs.values()))[1]
    h, w = input_size(experiment)
    opts = CompileOptions(dialect=data.dialect,
                          input_shapes={None: (batch_size, channels, h, w)},
                          feature_blob=data.options.get("feature_blob"),
                          lenient=bool(data.options.get("lenient")))
    graph = rebuild_graph(data.source, opts).graph
    return RunSetup(run, data, graph, space, experiment)
