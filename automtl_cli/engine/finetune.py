"""Fine-tuning's machinery: the configuration, the training loop, and measuring a network.

Fine-tuning follows the reference's post-train (docs/method.md §6): Adam (betas 0.5, 0.999, weight
decay 1e-4), the learning rate halved every `lr_step` iterations, the weighted sum of task
losses, the network either fresh from the seed (`--init scratch`, as the paper's runs) or from
the searched weights (`--init search`). Checkpoints, resume, progress, signals and the NaN guard
are the training loop's (automtl_cli/engine/loop.py). Metrics are reported on val and test;
nothing is selected on test.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch

from automtl_cli.artifacts import DerivedModel, FinetuneCheckpoint
from automtl_cli.data.loader import build_loader
from automtl_cli.engine import optimizers
from automtl_cli.engine.checkpoint import capture_rng, restore_rank_rng
from automtl_cli.engine.derive import network_of
from automtl_cli.engine.distributed import Dist, convert_sync_batchnorm, digest
from automtl_cli.engine.inits import INITS
from automtl_cli.engine.loop import TrainLoop
from automtl_cli.engine.precision import Precision, as_float, autocast
from automtl_cli.engine.search import to_device
from automtl_cli.engine.streams import BatchStream
from automtl_cli.experiment import DataSource
from automtl_cli.registry import parse_choice
from automtl_cli.tasks import Task, build_tasks, relative_score

__all__ = ["FinetuneConfig", "Finetuner", "candidate_iters_for", "class_weights",
           "delta_against", "evaluate"]

@dataclass(frozen=True)
class FinetuneConfig:
    iters: int
    lr: float = 1e-3
    lr_step: int = 4000
    lr_gamma: float = 0.5
    init: str = "scratch"
    batch_size: int | None = None
    checkpoint_every: int = 500
    log_every: int = 50
    keep: int = 3
    seed: int = 0
    num_workers: int = 0
    device: str = "cpu"
    metrics: str = "correct"
    sync_bn: bool = False
    precision: str = "fp32"  # "bf16": forward passes under autocast (engine/precision.py)

    def __post_init__(self) -> None:
        parse_choice("precision", Precision, self.precision)
        if self.iters < 0 or self.lr_step < 1 or self.lr <= 0:
            raise ValueError("iters ≥ 0, lr > 0 and lr-step ≥ 1 are needed")
        INITS.member(self.init)
        if self.checkpoint_every < 1 or self.log_every < 1 or self.keep < 1:
            raise ValueError("checkpoint-every, log-every and keep must be positive")

    @classmethod
    def defaults_for(cls, source: DataSource, **overrides: Any) -> FinetuneConfig:
        sheet = dict(iters=30000, lr_step=4000, checkpoint_every=1000, log_every=100) \
            if source is not DataSource.SYNTHETIC else \
            dict(iters=400, lr_step=150, checkpoint_every=100, log_every=20)
        return cls(**{**sheet, **{k: v for k, v in overrides.items() if v is not None}})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def class_weights(loader) -> Any:
    """The segmentation class weights a real dataset ships, or None."""
    info = getattr(loader.dataset, "info", None)
    return getattr(info, "seg_class_weights", None)


class Finetuner(TrainLoop):
    name = "finetune"

    def __init__(self, out_dir: str | os.PathLike, derived: DerivedModel,
                 config: FinetuneConfig, run_id: dict[str, Any], *,
                 show_progress: bool = True, dist: Dist | None = None) -> None:
        experiment = derived.experiment
        names = tuple(t.type for t in experiment.tasks)
        super().__init__(out_dir, FinetuneCheckpoint, total=config.iters,
                         checkpoint_every=config.checkpoint_every, log_every=config.log_every,
                         keep=config.keep, task_names=names, device=torch.device(config.device),
                         run_id=run_id, seed=config.seed, show_progress=show_progress,
                         dist=dist)
        self.derived, self.config, self.experiment = derived, config, experiment
        self.loader = build_loader(experiment.data, names, "train", seed=config.seed,
                                   batch_size=config.batch_size, num_workers=config.num_workers,
                                   rank=self.dist.rank, world_size=self.dist.world,
                                   pin_memory=self.device.type == "cuda")
        self.network = network_of(derived, INITS.get(config.init).weights(derived),
                                  class_weights=class_weights(self.loader))
        if config.sync_bn:
            self.network = convert_sync_batchnorm(self.network, torch.device(config.device))
        self.network.to(self.device)
        # Every parameter of a derived network is used at every step: plain DDP fits.
        self.model = torch.nn.parallel.DistributedDataParallel(
            self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None
        ) if self.dist.enabled else self.network
        self.tasks = build_tasks(experiment, class_weights(self.loader))
        self.loss_weights = torch.tensor([t.loss_weight for t in self.tasks], device=self.device)
        self.optimizer = optimizers.FINETUNE.build(self.network.parameters(), config.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, config.lr_step,
                                                         config.lr_gamma)
        self.stream = BatchStream(self.loader)

    def train_step(self) -> tuple[torch.Tensor, None]:
        batch = to_device(next(self.stream), self.device)
        with autocast(self.device, self.config.precision):
            preds = as_float(self.model(batch["image"]))
        losses = torch.stack([t.loss(preds[t.name], batch) for t in self.tasks])
        self.optimizer.zero_grad(set_to_none=True)
        (self.loss_weights * losses).sum().backward()
        self.optimizer.step()
        self.scheduler.step()
        return losses.detach(), None

    def log_fields(self) -> dict[str, Any]:
        return {"lr": self.scheduler.get_last_lr()[0]}

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), "model": self.network.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": self.dist.gather(capture_rng()), "data": self.stream.position(),
                "complete": self.step >= self.total,
                "rank_digests": self.dist.gather(digest(list(self.network.parameters())))}

    def load_state_dict(self, state: FinetuneCheckpoint) -> None:
        self.network.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        restore_rank_rng(state.rng, self.dist.rank, self.dist.world)
        self.stream = BatchStream(self.loader, *state.data)

    def run(self) -> dict[str, Any] | None:
        self.network.train()
        return super().run()


@torch.no_grad()
def evaluate(network: torch.nn.Module, tasks: tuple[Task, ...], loader, variant: str,
             device: torch.device, dist: Dist | None = None, precision: str = "fp32"
             ) -> dict[str, dict[str, float]]:
    """Metrics of every task over a whole split (sums, not averages of batch averages).

    Under torchrun each rank sees its shard and the metric sums are all-reduced, so N
    processes report what one would."""
    dist = dist or Dist()
    network.eval()
    metrics = {t.name: t.metric(variant) for t in tasks}
    losses = torch.zeros(len(tasks) + 1, dtype=torch.float64, device=device)
    for batch in loader.epoch(0):
        batch = to_device(batch, device)
        with autocast(device, precision):
            preds = as_float(network(batch["image"]))
        for i, t in enumerate(tasks):
            metrics[t.name].update(preds[t.name], batch)
            losses[i] += t.loss(preds[t.name], batch)
        losses[-1] += 1
    for m in metrics.values():
        for value in m.state.values():
            dist.all_reduce_(value)
    dist.all_reduce_(losses)
    out = {name: m.compute() for name, m in metrics.items()}
    for i, t in enumerate(tasks):
        out[t.name]["loss"] = float(losses[i] / losses[-1].clamp_min(1))
    return out


def candidate_iters_for(iters: int) -> int:
    """How long each sampled candidate is fine-tuned before the best on val is kept."""
    return max(1, iters // 5)


def delta_against(metrics, stl, tasks) -> dict[str, Any]:
    """Δ_t and Δ_T; a metric whose single-task value is 0 has no relative change and is left
    out (and named), rather than failing the whole report."""
    names, excluded = {}, []
    for t in tasks:
        keep = [m for m in t.delta_metrics if float(stl[t.name][m]) != 0.0]
        excluded += [f"{t.name}.{m}" for m in t.delta_metrics if m not in keep]
        if keep:
            names[t.name] = keep
    if not names:
        return {"per_task": {}, "mean": None, "excluded": excluded}
    d = relative_score({t: metrics[t] for t in names}, {t: stl[t] for t in names},
                       {t.name: t.higher_is_better for t in tasks if t.name in names}, names)
    out = {"per_task": {k: round(v, 3) for k, v in d.per_task.items()}, "mean": round(d.mean, 3)}
    if excluded:
        out["excluded"] = excluded
    return out
