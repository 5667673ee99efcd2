"""The finetune stage: RUN/derived/model.pt (or its sampled candidates) → RUN/final.pt and
RUN/metrics.json, with Δ_T against a single-task run when one is known."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from automtl_cli.artifacts import (
    DerivedModel,
    FinalModel,
    FinetuneCheckpoint,
    atomic_copy,
    check_writable,
    load,
    write_json,
)
from automtl_cli.artifacts.lock import run_lock
from automtl_cli.data.loader import build_loader
from automtl_cli.engine.checkpoint import CheckpointManager
from automtl_cli.engine.derive import network_of
from automtl_cli.engine.distributed import Dist, restarted_by_torchrun
from automtl_cli.engine.finetune import (
    FinetuneConfig,
    Finetuner,
    candidate_iters_for,
    delta_against,
    evaluate,
)
from automtl_cli.engine.plans.file import read_choices
from automtl_cli.errors import BadInput, MissingInput

__all__ = ["finetune", "finetune_config_for", "read_metrics"]


def finetune_config_for(run_dir: str | os.PathLike, **overrides: Any) -> FinetuneConfig:
    """The fine-tuning configuration of RUN: its dataset's sheet, the run's seed, `overrides`
    (None leaves a default) on top."""
    run = Path(run_dir)
    model = run / "derived" / "model.pt"
    first_candidate = run / "derived" / "candidates" / "0" / "model.pt"
    source = model if model.exists() else first_candidate
    if not source.exists():
        raise MissingInput(f"{model}: no derived model; run `automtl derive {run}` first")
    derived = load(source, DerivedModel)
    if overrides.get("seed") is None:
        overrides["seed"] = derived.seed
    try:
        return FinetuneConfig.defaults_for(derived.experiment.data.source, **overrides)
    except ValueError as e:
        raise BadInput(str(e)) from e


def _check_plan_file(plan_json: Path, derived: DerivedModel) -> None:
    """A plan.json edited after derive would be silently ignored (the network is model.pt's):
    refuse, and say how to use the edit."""
    if plan_json.exists() and read_choices(plan_json) != derived.plan.to_json_choices():
        run = plan_json.parent.parent
        raise BadInput(f"{plan_json}: its choices differ from the derived model's "
                       f"({plan_json.parent / 'model.pt'}); to train the edited plan, derive "
                       f"it first: `automtl derive {run} --plan {plan_json}`")


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """A run's metrics.json (a single-task run's, for Δ_T)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BadInput(f"{path}: not a metrics.json: {e}") from e


def _split_metrics(network, tasks, experiment, split, config, variant,
                   dist: Dist | None = None) -> dict[str, Any]:
    dist = dist or Dist()
    loader = build_loader(experiment.data, tuple(t.name for t in tasks), split,
                          seed=config.seed, num_workers=config.num_workers, rank=dist.rank,
                          world_size=dist.world)
    return evaluate(network, tasks, loader, variant, torch.device(config.device), dist,
                    config.precision)


def _select_candidate(run: Path, config: FinetuneConfig, candidate_iters: int,
                      show_progress: bool) -> dict[str, Any]:
    """Fine-tune every sampled candidate briefly; keep the best on val (test is not looked at)."""
    root = run / "derived" / "candidates"
    scores = []
    for cand in sorted((p for p in root.iterdir() if (p / "model.pt").exists()),
                       key=lambda p: int(p.name)):
        derived = load(cand / "model.pt", DerivedModel)
        short = dataclasses.replace(config, iters=candidate_iters,
                                    checkpoint_every=max(candidate_iters, 1))
        tuner = Finetuner(run / "finetune" / "candidates" / cand.name, derived, short,
                          {"candidate": cand.name}, show_progress=show_progress)
        tuner.run()
        val = _split_metrics(tuner.network, tuner.tasks, derived.experiment, "val", short,
                             config.metrics)
        weighted = sum(t.loss_weight * val[t.name]["loss"] for t in tuner.tasks)
        scores.append({"candidate": int(cand.name), "val_loss": weighted})
    if not scores:
        raise MissingInput(f"{root}: no candidates")
    best = min(scores, key=lambda s: s["val_loss"])
    for name in ("plan.json", "model.pt", "model.prototxt"):
        src = root / str(best["candidate"]) / name
        if src.exists():
            atomic_copy(src, run / "derived" / name)
    write_json(run / "derived" / "selection.json",
               {"selected": best["candidate"], "by": "weighted val loss after "
                f"{candidate_iters} iterations", "scores": scores})
    return {"selected": best["candidate"], "scores": scores}


def finetune(run_dir: str | os.PathLike, config: FinetuneConfig, *, resume: bool = False,
                 candidate_iters: int | None = None, show_progress: bool = True,
                 stl_metrics: dict[str, Any] | None = None,
                 dist: Dist | None = None) -> dict[str, Any]:
    """Fine-tune RUN's derived model (its best sampled candidate first, if there are several)
    and measure it; writes RUN/final.pt and RUN/metrics.json."""
    with run_lock(run_dir, enabled=dist is None or dist.is_main):
        return _finetune(run_dir, config, resume=resume, candidate_iters=candidate_iters,
                         show_progress=show_progress, stl_metrics=stl_metrics, dist=dist)


def _finetune(run_dir: str | os.PathLike, config: FinetuneConfig, *, resume: bool = False,
                 candidate_iters: int | None = None, show_progress: bool = True,
                 stl_metrics: dict[str, Any] | None = None,
                 dist: Dist | None = None) -> dict[str, Any]:
    dist = dist or Dist()
    run = Path(run_dir)
    resume = resume or (restarted_by_torchrun() and (run / "finetune" / "last.pt").exists())
    if dist.is_main:  # where the results go, checked before any training
        check_writable(run / "finetune", directory=True)
        for name in ("final.pt", "metrics.json"):
            check_writable(run / name)
    selection = None
    candidates = run / "derived" / "candidates"
    if candidates.is_dir() and not resume and any(candidates.iterdir()):
        if dist.enabled:
            raise BadInput("select sampled candidates in one process first (`automtl "
                           "finetune` without torchrun), then fine-tune under torchrun")
        selection = _select_candidate(run, config,
                                      candidate_iters or candidate_iters_for(config.iters),
                                      show_progress)
        shutil.rmtree(candidates)
    path = run / "derived" / "model.pt"
    if not path.exists():
        raise MissingInput(f"{path}: no derived model; run `automtl derive {run}` first")
    derived = load(path, DerivedModel)
    _check_plan_file(run / "derived" / "plan.json", derived)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    run_id = {"derived_sha256": sha}
    # a checkpoint that cannot be resumed fails before the data is built
    state = CheckpointManager(run / "finetune", FinetuneCheckpoint).load_last(run_id) \
        if resume else None
    tuner = Finetuner(run / "finetune", derived, config, run_id,
                      show_progress=show_progress, dist=dist)
    if resume:
        tuner.resume(state)
    record = tuner.run()
    experiment = derived.experiment
    metrics = {split: _split_metrics(tuner.network, tuner.tasks, experiment, split, config,
                                     config.metrics, dist) for split in ("val", "test")}
    report = derived.report
    result: dict[str, Any] = {
        "run": str(run), "plan": derived.plan.source, "init": config.init,
        "steps": tuner.step, "final_loss": record["loss"] if record else None,
        "metrics": metrics, "params": report["params"], "flops": report["flops"],
        "fraction_shared": report["summary"]["fraction_shared"],
        "metric_variant": config.metrics,
    }
    if selection:
        result["selection"] = selection
    stl = stl_metrics
    if stl is None and (run / "baselines" / "specific" / "metrics.json").exists():
        stl = read_metrics(run / "baselines" / "specific" / "metrics.json")
    if stl is not None:
        result["delta"] = {split: delta_against(metrics[split], stl["metrics"][split], tuner.tasks)
                           for split in ("val", "test")}
    if dist.is_main:
        state = tuner.network.state_dict()
        if config.sync_bn:  # a final model holds plain BatchNorm, whatever trained it
            state = _plain_state(derived, state)
        trained = dataclasses.replace(derived, state_dict=state)
        FinalModel(trained, metrics, config.to_dict()).save(run / "final.pt")
        write_json(run / "metrics.json", result)
    dist.barrier()
    result["final"] = str(run / "final.pt")
    return result


def _plain_state(derived: DerivedModel, state: dict[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """SyncBatchNorm and BatchNorm2d share their state keys; check, and return it as is."""
    return network_of(derived, state).state_dict()


