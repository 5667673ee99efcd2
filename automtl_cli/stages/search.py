"""The search stage: RUN/supermodel.pt → RUN/search/ (checkpoints, log.jsonl), resumable."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from automtl_cli.artifacts import SearchCheckpoint, SupermodelArtifact, check_writable
from automtl_cli.artifacts.lock import run_lock
from automtl_cli.engine.checkpoint import CheckpointManager
from automtl_cli.engine.distributed import Dist, restarted_by_torchrun
from automtl_cli.engine.runconfig import read_supermodel, setup_run
from automtl_cli.engine.search import SearchConfig, Searcher
from automtl_cli.errors import BadInput
from automtl_cli.experiment import ExperimentConfig, build_stage_experiment

__all__ = ["search", "search_config_for", "search_experiment"]

log = logging.getLogger(__name__)


def search_experiment(supermodel: SupermodelArtifact, experiment_path: str | None,
                      tasks: str | None, data: str | None) -> ExperimentConfig:
    """The experiment of a search: the flags', the tasks defaulting to the compile's."""
    if supermodel.tasks and not tasks:
        tasks = ",".join(supermodel.tasks)
    return build_stage_experiment(experiment_path, tasks, data)


def search_config_for(experiment: ExperimentConfig, supermodel: SupermodelArtifact,
                      **overrides: Any) -> SearchConfig:
    """The data's sheet with `overrides` (None leaves a default); the seed defaults to the
    compile's."""
    if overrides.get("seed") is None:
        overrides["seed"] = supermodel.seed
    try:
        return SearchConfig.defaults_for(experiment.data.source, **overrides)
    except ValueError as e:
        raise BadInput(str(e)) from e


def search(run_dir: str | os.PathLike, config: SearchConfig, experiment: ExperimentConfig, *,
           supermodel: SupermodelArtifact | None = None, resume: bool = False,
           show_progress: bool = True, dist: Dist | None = None) -> dict[str, Any]:
    """Search RUN's policy; returns the summary (steps, τ, sharing, the policy table)."""
    with run_lock(run_dir, enabled=dist is None or dist.is_main):
        return _search(run_dir, config, experiment, supermodel=supermodel, resume=resume,
                       show_progress=show_progress, dist=dist)


def _search(run_dir: str | os.PathLike, config: SearchConfig, experiment: ExperimentConfig, *,
           supermodel: SupermodelArtifact | None = None, resume: bool = False,
           show_progress: bool = True, dist: Dist | None = None) -> dict[str, Any]:
    supermodel = supermodel or read_supermodel(run_dir)
    check_writable(Path(run_dir) / "search", directory=True)
    batch = config.batch_size or experiment.data.batch_size
    setup = setup_run(run_dir, experiment, batch, supermodel)
    checkpoints = CheckpointManager(Path(run_dir) / "search", SearchCheckpoint)
    resume = resume or (restarted_by_torchrun() and checkpoints.last.exists())
    # a checkpoint that cannot be resumed fails before the data is built
    state = checkpoints.load_last(setup.run_id()) if resume else None
    searcher = Searcher(run_dir, setup.graph, setup.space, experiment, config, setup.run_id(),
                        show_progress=show_progress, dist=dist,
                        pretrained=supermodel.weights)
    if resume:
        step = searcher.resume(state)
        log.info("resuming the search at step %d of %d", step, config.total)
    return searcher.run()
