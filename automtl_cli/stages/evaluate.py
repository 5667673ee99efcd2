"""The evaluate stage: a final (or derived) model's metrics on a split, on its own data or on
other data (`synthetic`, `nyuv2:DIR`, …)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from automtl_cli.artifacts import DerivedModel, FinalModel, load
from automtl_cli.data.loader import build_loader
from automtl_cli.engine.derive import network_of
from automtl_cli.engine.distributed import Dist
from automtl_cli.engine.finetune import class_weights, evaluate
from automtl_cli.experiment import parse_data_arg
from automtl_cli.tasks import build_tasks

__all__ = ["evaluate_model", "load_model"]


def load_model(path: str | os.PathLike) -> tuple[DerivedModel, torch.nn.Module]:
    """A final model (or a derived model.pt) and its network, weights loaded."""
    artifact = load(path, (FinalModel, DerivedModel))
    derived = artifact.derived if isinstance(artifact, FinalModel) else artifact
    return derived, network_of(derived, derived.state_dict)


def evaluate_model(path: str | os.PathLike, split: str, *, data: str | None = None,
                   variant: str = "correct", batch_size: int | None = None,
                   num_workers: int = 0, device: str = "cpu",
                   dist: Dist | None = None, precision: str = "fp32"
                   ) -> dict[str, dict[str, Any]]:
    """`automtl eval`: every task's metrics on `split`."""
    dist = dist or Dist()
    derived, network = load_model(path)
    experiment = derived.experiment
    if data:
        source, root = parse_data_arg(data)
        experiment = dataclasses.replace(experiment, data=dataclasses.replace(
            experiment.data, source=source, root=root)).resolve()
    names = tuple(t.type for t in experiment.tasks)
    loader = build_loader(experiment.data, names, split, seed=derived.seed,
                          batch_size=batch_size, num_workers=num_workers, rank=dist.rank,
                          world_size=dist.world)
    tasks = build_tasks(experiment, class_weights(loader))
    dev = torch.device(device)
    return evaluate(network.to(dev), tasks, loader, variant, dev, dist, precision)
