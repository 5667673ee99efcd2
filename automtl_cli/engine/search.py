"""`automtl search`: warm-up, then alternating policy and weight steps, resumable to the bit.

The loop follows the reference (docs/method.md §4): a warm-up where every search node
averages its branches (Adam), then cycles of p policy steps (Adam on the logits, on train2) and q
weight steps (SGD on weights and heads, on train1) with soft Gumbel-softmax forwards, τ decaying
every n policy steps, and the sharing regulariser in the policy steps' loss.

Everything that decides the next step is in the checkpoint: weights, logits, the three
optimisers, τ and the step, Python/numpy/torch random states, and each split's (epoch, offset).
Gumbel noise is a function of (seed, step), so a resumed run draws what the uninterrupted one
would have, and batches are a function of (seed, epoch, offset).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from automtl_cli.artifacts import SearchCheckpoint
from automtl_cli.compiler.space import SearchSpace
from automtl_cli.compiler.strategies import Stage
from automtl_cli.compiler.supermodel import NodeWeights, build_supermodel, gumbel_noise
from automtl_cli.data.loader import build_loader
from automtl_cli.engine import optimizers
from automtl_cli.engine.checkpoint import capture_rng, restore_rank_rng
from automtl_cli.engine.distributed import Dist, digest
from automtl_cli.engine.estimators import Estimator
from automtl_cli.engine.loop import NonFiniteLoss, TrainLoop
from automtl_cli.engine.network import SearchNetwork
from automtl_cli.engine.precision import Precision, as_float, autocast
from automtl_cli.engine.regularizers import REGULARIZERS, RegContext
from automtl_cli.engine.schedule import Alternation, Phase, TauSchedule
from automtl_cli.engine.stepping import STEPPINGS
from automtl_cli.engine.streams import BatchStream
from automtl_cli.errors import BadInput
from automtl_cli.experiment import DataSource, ExperimentConfig
from automtl_cli.frontend.ir import Graph
from automtl_cli.registry import parse_choice
from automtl_cli.tasks import build_tasks

__all__ = ["NonFiniteLoss", "SearchConfig", "Searcher",
           "policy_decision", "policy_entropy", "policy_sharing", "policy_table"]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class SearchConfig:
    warmup_iters: int
    iters: int
    policy_steps: int
    weight_steps: int
    tau: float = 5.0
    tau_decay: float = 0.965
    tau_every: int = 101
    reg: str = "reference"
    reg_weight: float = 1e-3
    reg_target: float | None = None
    reg_scale: float = 6.0
    warmup_lr: float = 1e-3
    policy_lr: float = 0.01
    weight_lr: float = 1e-3
    batch_size: int | None = None  # None: the experiment's data.batch_size
    step: str = "sum"  # "sum": one step on the summed task losses; "per-task": the reference's
    estimator: str = "soft"  # "soft": Gumbel-softmax mixture; "gdas": the sampled branch only
    checkpoint_every: int = 100
    keep: int = 3
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    device: str = "cpu"
    precision: str = "fp32"  # "bf16": forward passes under autocast (engine/precision.py)

    def __post_init__(self) -> None:
        parse_choice("precision", Precision, self.precision)
        if self.warmup_iters < 0 or self.iters < 0:
            raise ValueError("iters and warmup iters must not be negative")
        REGULARIZERS.member(self.reg)
        STEPPINGS.member(self.step)
        parse_choice("estimator", Estimator, self.estimator)
        if self.checkpoint_every < 1 or self.log_every < 1 or self.keep < 1:
            raise ValueError("checkpoint-every, log-every and keep must be positive")
        Alternation(self.warmup_iters, self.policy_steps, self.weight_steps)
        TauSchedule(self.tau, self.tau_decay, self.tau_every)

    @property
    def total(self) -> int:
        return self.warmup_iters + self.iters

    @classmethod
    def defaults_for(cls, source: DataSource, **overrides: Any) -> SearchConfig:
        """The reference's sheet (docs/method.md §4) for real data; a CPU-sized one for
        synthetic data."""
        sheet = {
            DataSource.CITYSCAPES: dict(warmup_iters=10000, iters=20000, policy_steps=100,
                                        weight_steps=400, warmup_lr=1e-4, weight_lr=1e-4,
                                        reg_weight=5e-4, checkpoint_every=500, log_every=100),
            DataSource.NYUV2: dict(warmup_iters=10000, iters=20000, policy_steps=50,
                                   weight_steps=50, warmup_lr=1e-3, weight_lr=1e-3,
                                   reg_weight=1e-3, checkpoint_every=200, log_every=50),
            DataSource.TASKONOMY: dict(warmup_iters=10000, iters=50000, policy_steps=100,
                                       weight_steps=400, warmup_lr=1e-3, weight_lr=1e-4,
                                       reg_weight=5e-4, checkpoint_every=500, log_every=100),
            # Minutes on two cores: 100 policy steps, τ from 5 down to the reference's end
            # point (5·0.965^99 ≈ 0.15 on NYUv2) in 25 decays, and a policy learning rate that
            # moves the logits that far in 100 steps (measured: tau_decay 0.94/policy_lr 0.03
            # left the mean chosen-branch probability at 0.45–0.81, τ at 1.06).
            DataSource.SYNTHETIC: dict(warmup_iters=100, iters=200, policy_steps=10,
                                       weight_steps=10, warmup_lr=1e-3, weight_lr=1e-2,
                                       tau_decay=0.87, tau_every=4, policy_lr=0.15,
                                       reg_weight=1e-3, checkpoint_every=50, log_every=10),
        }[source]
        values = {**sheet, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def policy_table(logits: torch.Tensor, names: list[str], tasks: tuple[str, ...]
                 ) -> list[dict[str, Any]]:
    """Per search node and task: the probabilities of shared, specific and skip."""
    probs = torch.softmax(logits.detach().float().cpu(), dim=-1).tolist()
    return [{"node": name, **{task: [round(p, 4) for p in probs[i][t]]
                              for t, task in enumerate(tasks)}}
            for i, name in enumerate(names)]


def policy_sharing(logits: torch.Tensor) -> float:
    """The fraction of (node, task) choices whose most likely branch is the shared one."""
    logits = logits.detach()
    return float((logits.argmax(-1) == 0).float().mean()) if logits.numel() else 1.0


def policy_entropy(logits: torch.Tensor) -> float:
    """The policy's mean entropy per (node, task), in nats."""
    p = torch.softmax(logits.detach(), dim=-1)
    return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean()) if p.numel() else 0.0


def policy_decision(logits: torch.Tensor) -> dict[str, Any]:
    """`decided`: the mean over (node, task) of the chosen branch's probability; per node,
    `node_entropy` and `node_chosen_p` (means over tasks), in search-node order."""
    if not logits.numel():
        return {"decided": 1.0, "node_entropy": [], "node_chosen_p": []}
    p = torch.softmax(logits.detach().float().cpu(), dim=-1)  # [S, T, 3]
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
    chosen = p.max(-1).values
    return {"decided": round(float(chosen.mean()), 4),
            "node_entropy": [round(v, 4) for v in entropy.mean(-1).tolist()],
            "node_chosen_p": [round(v, 4) for v in chosen.mean(-1).tolist()]}


class Searcher(TrainLoop):
    """The search loop: build, (resume), run.

    Under torchrun every rank reads its shard of each split and draws the same Gumbel noise;
    after each backward the gradients of the step's parameters (logits in a policy step,
    weights otherwise) are averaged in one flat all-reduce. DistributedDataParallel's reducer
    is not used here because each step differentiates a different subset of the parameters,
    which it cannot follow; the finetune loop, where every parameter is used, does use it.
    """

    name = "search"
    extra_name = "reg"

    def __init__(self, run_dir: str | os.PathLike, graph: Graph, space: SearchSpace,
                 experiment: ExperimentConfig, config: SearchConfig, run_id: dict[str, Any],
                 *, show_progress: bool = True, count: dict[str, int] | None = None,
                 dist: Dist | None = None, pretrained: NodeWeights | None = None) -> None:
        names = tuple(t.type for t in experiment.tasks)
        super().__init__(Path(run_dir) / "search", SearchCheckpoint,
                         total=config.total, checkpoint_every=config.checkpoint_every,
                         log_every=config.log_every, keep=config.keep, task_names=names,
                         device=torch.device(config.device), run_id=run_id, seed=config.seed,
                         show_progress=show_progress, dist=dist)
        self.run_dir = Path(run_dir)
        self.config, self.experiment, self.space = config, experiment, space
        data = experiment.data
        self.loaders = {
            split: build_loader(data, names, split, seed=config.seed + i,
                                batch_size=config.batch_size, num_workers=config.num_workers,
                                count=(count or {}).get(split), rank=self.dist.rank,
                                world_size=self.dist.world,
                                pin_memory=torch.device(config.device).type == "cuda")
            for i, split in enumerate(("train", "train1", "train2"))
        }
        info = getattr(self.loaders["train"].dataset, "info", None)
        self.tasks = build_tasks(experiment, getattr(info, "seg_class_weights", None))
        backbone = build_supermodel(graph, space, seed=config.seed, weights=pretrained)
        self.net = SearchNetwork(backbone, self.tasks, config.seed).to(self.device)
        self.search_names = [n.name for n in graph.searchable]
        self.loss_weights = torch.tensor([t.loss_weight for t in self.tasks], device=self.device)
        self.alternation = Alternation(config.warmup_iters, config.policy_steps,
                                       config.weight_steps)
        self.tau_schedule = TauSchedule(config.tau, config.tau_decay, config.tau_every)
        self.regularizer = REGULARIZERS.get(config.reg).bind(RegContext(
            graph, space, config.reg_scale, config.reg_target, self.device))
        self.stepping = STEPPINGS.get(config.step)
        self.estimator = Estimator(config.estimator)
        logits, weights = self.net.logit_parameters(), self.net.weight_parameters()
        self.optimizers = {
            Phase.WARMUP.value: optimizers.WARMUP.build(weights, config.warmup_lr),
            Phase.POLICY.value: optimizers.POLICY.build(logits, config.policy_lr),
            Phase.WEIGHT.value: optimizers.WEIGHT.build(weights, config.weight_lr),
        }
        self.streams = {split: BatchStream(loader) for split, loader in self.loaders.items()}

    # ------------------------------------------------------------------ state

    @property
    def tau(self) -> float:
        return self.tau_schedule.at(self.alternation.policy_steps_before(self.step))

    def stage_of(self, step: int) -> str:
        return self.alternation.stage(step).value

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "experiment": self.experiment,
            "space": self.space,
            "search_nodes": tuple(self.search_names),
            # [S, T, 3] in search_nodes × space.tasks order: readers need no state-dict keys
            "policy_logits": self.net.backbone.logits().detach().cpu(),
            "model": self.net.state_dict(),
            "optimizers": {k: self.optimizers[k].state_dict()
                           for k in self._optimizers_needed(self.step)},
            "tau": self.tau,
            "stage": self.alternation.stage(self.step).value if self.step < self.total
            else "done",
            "rng": self.dist.gather(capture_rng()),
            "data": {split: s.position() for split, s in self.streams.items()},
            "complete": self.step >= self.total,
            # what each rank holds, to show data-parallel ranks stay identical
            "rank_digests": self.dist.gather({
                "logits": digest(self.net.logit_parameters()),
                "weights": digest(self.net.weight_parameters())}),
        }

    def _optimizers_needed(self, step: int) -> list[str]:
        """The optimisers whose state the steps from `step` on use: the warm-up's ends with the
        warm-up (a third of a search checkpoint's tensors, not written once it is over)."""
        return [k for k in self.optimizers
                if k != Phase.WARMUP.value or step < self.config.warmup_iters]

    def load_state_dict(self, state: SearchCheckpoint) -> None:
        self.net.load_state_dict(state.model)
        for k in self._optimizers_needed(state.step):
            if k not in state.optimizers:
                raise BadInput(f"{self.checkpoints.last}: has no state of the {k} optimiser, "
                               f"which step {state.step} needs")
            self.optimizers[k].load_state_dict(state.optimizers[k])
        restore_rank_rng(state.rng, self.dist.rank, self.dist.world)
        for split, (epoch, offset) in state.data.items():
            self.streams[split] = BatchStream(self.loaders[split], epoch, offset)

    # ------------------------------------------------------------------ steps

    def _noise(self, stream: int = 0) -> torch.Tensor:
        shape = (len(self.search_names), len(self.tasks), 3)
        return gumbel_noise(shape, self.config.seed + stream, self.step).to(self.device)

    # What a stepping mode (engine/stepping) calls; see its SearchState protocol.

    def batch(self, split: str) -> dict[str, torch.Tensor]:
        return to_device(next(self.streams[split]), self.device)

    def branch_weights(self, stage: str, tau: float) -> torch.Tensor | None:
        if stage == Stage.WARMUP:
            return None
        return self.net.backbone.branch_weights(stage, tau=tau, noise=self._noise())

    def forward(self, image: torch.Tensor, stage: str, tau: float) -> dict[str, torch.Tensor]:
        kw = {} if stage == Stage.WARMUP else {"tau": tau, "noise": self._noise()}
        with autocast(self.device, self.config.precision):
            return as_float(self.net(image, stage, **kw))

    def forward_task(self, image: torch.Tensor, task: int, stage: str,
                     pi: torch.Tensor | None) -> torch.Tensor:
        with autocast(self.device, self.config.precision):
            return self.net.forward_task(image, task, stage, pi=pi).float()

    def regulariser(self, tau: float) -> torch.Tensor:
        """Per-task regulariser values [T] (or [1] when all tasks share one)."""
        return self.regularizer(self.net.backbone.logits(), tau, self._noise)

    def apply(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
              params: list[torch.nn.Parameter]) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        self.dist.average_grads(params)
        optimizer.step()

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        phase = self.alternation.stage(self.step)
        policy = phase is Phase.POLICY
        stage = Stage.WARMUP if phase is Phase.WARMUP else self.estimator.stage
        params = self.net.logit_parameters() if policy else self.net.weight_parameters()
        return self.stepping.step(self, split=phase.split, stage=stage, tau=self.tau,
                                  policy=policy, reg_weight=self.config.reg_weight,
                                  optimizer=self.optimizers[phase.value], params=params)

    # ------------------------------------------------------------------ reporting

    def sharing_fraction(self) -> float:
        return policy_sharing(self.net.backbone.logits())

    def entropy(self) -> float:
        return policy_entropy(self.net.backbone.logits())

    def decision(self) -> dict[str, Any]:
        return policy_decision(self.net.backbone.logits())

    def log_fields(self) -> dict[str, Any]:
        return {"tau": round(self.tau, 6), "sharing": round(self.sharing_fraction(), 4),
                "entropy": round(self.entropy(), 6), **self.decision()}

    def run(self) -> dict[str, Any]:
        self.net.train()
        record = super().run()
        logits = self.net.backbone.logits()
        return {
            "run": str(self.run_dir),
            "checkpoint": str(self.checkpoints.last),
            "steps": self.step,
            "tau": self.tau,
            "sharing": self.sharing_fraction(),
            "entropy": self.entropy(),
            "decided": self.decision()["decided"],
            "loss": record["loss"] if record else None,
            "seconds": round(self.seconds, 2),
            "tasks": [t.name for t in self.tasks],
            "policy": policy_table(logits, self.search_names, tuple(t.name for t in self.tasks)),
        }


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
