"""From a run directory and flags to what a stage needs: the graph at the data's size, the
search space, the experiment, and the identity a checkpoint must match to be resumed."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automtl_cli.artifacts import SupermodelArtifact, load
from automtl_cli.compiler.space import SearchSpace
from automtl_cli.errors import BadInput, MissingInput
from automtl_cli.experiment import (
    DataSource,
    ExperimentConfig,
    default_experiment,
    load_experiment,
    parse_data_arg,
    parse_tasks_arg,
)
from automtl_cli.frontend.build import CompileOptions, build_graph
from automtl_cli.frontend.ir import Graph

__all__ = ["RunSetup", "read_supermodel", "resolve_experiment", "setup_run"]


def resolve_experiment(path: str | None, tasks: str | None, data: str | None
                       ) -> ExperimentConfig:
    """The experiment file (or the built-in synthetic default), with --tasks and --data applied."""
    experiment = load_experiment(path) if path else default_experiment()
    if data:
        source, root = parse_data_arg(data)
        if source is not experiment.data.source or root != experiment.data.root:
            experiment = dataclasses.replace(
                experiment, data=dataclasses.replace(experiment.data, source=source, root=root))
    if tasks:
        names = parse_tasks_arg(tasks)
        known = {t.type: t for t in experiment.tasks}
        template = experiment.tasks[0]
        experiment = dataclasses.replace(experiment, tasks=tuple(
            known.get(n) or dataclasses.replace(template, type=n, classes=None, loss_weight=1.0,
                                                pos_weight=None)
            for n in names))
    try:
        return experiment.resolve()
    except ValueError as e:
        raise BadInput(f"experiment: {e}") from e


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
    graph = build_graph(data.source["path"], opts, text=data.source["text"]).graph
    return RunSetup(run, data, graph, space, experiment)
