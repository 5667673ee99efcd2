"""One frozen dataclass per artifact kind, and one `load(path, expect=KIND)`.

The files on disk are torch containers of plain data and tensors (read with
`weights_only=True`, so a file can never run code); these classes are their typed view. Each says
which kind it is and the newest format it reads; `to_payload` gives exactly what is stored, and
`from_payload` rebuilds the typed fields (the IR, the search space, the experiment, the plan),
refusing a malformed file with one line that names it. docs/artifacts.md lists every field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from automtl_cli import __version__
from automtl_cli.artifacts.io import read_payload, save_payload
from automtl_cli.artifacts.kinds import ArtifactKind
from automtl_cli.compiler.plan import Plan
from automtl_cli.compiler.space import SearchSpace
from automtl_cli.errors import BadInput
from automtl_cli.experiment import ExperimentConfig
from automtl_cli.frontend.ir import Graph

__all__ = ["Artifact", "DerivedModel", "ExportManifest", "FinalModel", "FinetuneCheckpoint",
           "SearchCheckpoint", "SupermodelArtifact", "load"]

A = TypeVar("A", bound="Artifact")
StateDict = dict[str, torch.Tensor]
NodeWeights = dict[str, StateDict]  # a backbone's weights, per node (compiler.supermodel)


def _node_weights(data: Any) -> NodeWeights | None:
    """Stored per-node weights, checked to be what they claim (a malformed file is refused)."""
    if data is None:
        return None
    if not isinstance(data, Mapping) or not all(
            isinstance(state, Mapping) and all(isinstance(t, torch.Tensor) for t in state.values())
            for state in data.values()):
        raise ValueError("weights: expected node name → {key: tensor}")
    return {str(node): dict(state) for node, state in data.items()}


class Artifact:
    """What every artifact class provides."""

    KIND: ClassVar[ArtifactKind]
    FORMAT: ClassVar[int]  # the format this version writes, and the newest it reads
    OLDEST: ClassVar[int] = 1  # the oldest it still reads

    def to_payload(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_payload(cls: type[A], data: Mapping[str, Any]) -> A:
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> Path:
        return save_payload(path, self.KIND, self.FORMAT, self.to_payload())


@dataclass(frozen=True)
class SupermodelArtifact(Artifact):
    """RUN/supermodel.pt: the compiled backbone and its search space. A stage materialises the
    weights from `seed` when it first needs them, then starts every branch from the backbone's
    pretrained `weights` when the source had some (`--weights`, a PyTorch module's own)."""

    KIND = ArtifactKind.SUPERMODEL
    FORMAT = 3  # 2: the IR keeps a list of outputs; 3: pretrained weights
    OLDEST = 2

    graph: Graph  # the IR at the compile's input shape
    source: dict[str, str]  # path, text and sha256 of the prototxt it was compiled from
    dialect: str
    options: dict[str, Any]  # the front end's options (dialect, input_shapes, feature_blob, …)
    input_shape: dict[str, list[int]]
    feature_blob: str
    seed: int
    bn: str
    skip: str
    tasks: tuple[str, ...]  # empty when compiled without --tasks
    weights: NodeWeights | None = None  # node name → its op's state dict; None: none given

    def to_payload(self) -> dict[str, Any]:
        return {"graph": self.graph.to_dict(), "source": dict(self.source),
                "dialect": self.dialect, "options": dict(self.options),
                "input_shape": dict(self.input_shape), "feature_blob": self.feature_blob,
                "seed": self.seed, "bn": self.bn, "skip": self.skip, "tasks": list(self.tasks),
                "weights": self.weights}

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> SupermodelArtifact:
        return cls(Graph.from_dict(data["graph"]), dict(data["source"]), data["dialect"],
                   dict(data["options"]), dict(data["input_shape"]), data["feature_blob"],
                   int(data["seed"]), data["bn"], data["skip"], tuple(data.get("tasks") or ()),
                   _node_weights(data.get("weights")))


@dataclass(frozen=True)
class SearchCheckpoint(Artifact):
    """RUN/search/step-N.pt and last.pt: everything that decides the search's next step."""

    KIND = ArtifactKind.SEARCH_CHECKPOINT
    FORMAT = 2  # 2: the policy as one `policy_logits` [S, T, 3] tensor
    OLDEST = 2

    step: int
    run_id: dict[str, Any]  # what a resume must match (supermodel hash, tasks, bn, skip)
    config: dict[str, Any]  # the resolved SearchConfig
    experiment: ExperimentConfig
    space: SearchSpace
    search_nodes: tuple[str, ...]
    policy_logits: torch.Tensor  # [S, T, 3] in search_nodes × space.tasks order
    model: StateDict  # supermodel and heads
    optimizers: dict[str, Any]
    tau: float
    stage: str  # the phase of the next step, or "done"
    rng: Any  # every rank's Python, numpy and torch random states
    data: dict[str, Any]  # each split's (epoch, offset)
    complete: bool
    rank_digests: Any = None

    def to_payload(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "step": self.step, "config": self.config,
                "experiment": self.experiment.to_dict(), "space": self.space.to_dict(),
                "search_nodes": list(self.search_nodes), "policy_logits": self.policy_logits,
                "model": self.model, "optimizers": self.optimizers, "tau": self.tau,
                "stage": self.stage, "rng": self.rng, "data": self.data,
                "complete": self.complete, "rank_digests": self.rank_digests}

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> SearchCheckpoint:
        return cls(int(data["step"]), dict(data.get("run_id", {})), dict(data["config"]),
                   ExperimentConfig.from_dict(data["experiment"]),
                   SearchSpace.from_dict(data["space"]), tuple(data["search_nodes"]),
                   data["policy_logits"], data["model"], data["optimizers"], float(data["tau"]),
                   data["stage"], data["rng"], data["data"], bool(data["complete"]),
                   data.get("rank_digests"))

    @property
    def seed(self) -> int:
        return int(self.config["seed"])


@dataclass(frozen=True)
class DerivedModel(Artifact):
    """RUN/derived/model.pt: a plan, the network it builds and that network's weights."""

    KIND = ArtifactKind.DERIVED_MODEL
    FORMAT = 2  # 2: the backbone's pretrained weights, for `finetune --init pretrained`

    plan: Plan
    graph: Graph  # the backbone at the data's input size, batch 1
    space: SearchSpace
    experiment: ExperimentConfig
    seed: int
    init: dict[str, Any]  # where the weights came from (search checkpoint or seed)
    state_dict: StateDict
    report: dict[str, Any]  # plan.json: choices, parameters, FLOPs
    pretrained: NodeWeights | None = None  # the supermodel's `weights`, when it had some

    def to_payload(self) -> dict[str, Any]:
        return {"plan": self.plan.to_dict(), "graph": self.graph.to_dict(),
                "space": self.space.to_dict(), "experiment": self.experiment.to_dict(),
                "seed": self.seed, "init": self.init, "state_dict": self.state_dict,
                "report": self.report, "pretrained": self.pretrained}

    def description(self) -> dict[str, Any]:
        """The payload without the weights (what a final model embeds)."""
        return {k: v for k, v in self.to_payload().items()
                if k not in ("state_dict", "pretrained")}

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> DerivedModel:
        return cls(Plan.from_dict(data["plan"]), Graph.from_dict(data["graph"]),
                   SearchSpace.from_dict(data["space"]),
                   ExperimentConfig.from_dict(data["experiment"]), int(data["seed"]),
                   dict(data["init"]), data.get("state_dict", {}), dict(data["report"]),
                   _node_weights(data.get("pretrained")))


@dataclass(frozen=True)
class FinetuneCheckpoint(Artifact):
    """RUN/finetune/step-N.pt and last.pt."""

    KIND = ArtifactKind.FINETUNE_CHECKPOINT
    FORMAT = 1

    step: int
    run_id: dict[str, Any]  # the derived model's hash (or the candidate's name)
    config: dict[str, Any]  # the resolved FinetuneConfig
    model: StateDict
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: Any
    data: Any  # (epoch, offset)
    complete: bool
    rank_digests: Any = None

    def to_payload(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "step": self.step, "config": self.config,
                "model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler,
                "rng": self.rng, "data": self.data, "complete": self.complete,
                "rank_digests": self.rank_digests}

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> FinetuneCheckpoint:
        return cls(int(data["step"]), dict(data.get("run_id", {})), dict(data["config"]),
                   data["model"], data["optimizer"], data["scheduler"], data["rng"],
                   data["data"], bool(data["complete"]), data.get("rank_digests"))


@dataclass(frozen=True)
class FinalModel(Artifact):
    """RUN/final.pt: the fine-tuned network, with the derived model it was trained from."""

    KIND = ArtifactKind.FINAL_MODEL
    FORMAT = 1

    derived: DerivedModel  # its weights are the fine-tuned ones
    metrics: dict[str, Any]  # val and test, per task
    config: dict[str, Any]  # the FinetuneConfig that trained it

    def to_payload(self) -> dict[str, Any]:
        return {"derived": self.derived.description(), "state_dict": self.derived.state_dict,
                "metrics": self.metrics, "config": self.config}

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> FinalModel:
        derived = DerivedModel.from_payload({**data["derived"], "state_dict": data["state_dict"]})
        return cls(derived, dict(data["metrics"]), dict(data["config"]))


@dataclass(frozen=True)
class ExportManifest:
    """The metadata an exported ONNX or TorchScript model carries (strings only, as ONNX's
    metadata_props require)."""

    KIND: ClassVar[ArtifactKind] = ArtifactKind.EXPORT
    FORMAT: ClassVar[int] = 1

    format: str
    source: str  # the .pt it was exported from
    source_kind: str  # final, derived or given
    tasks: tuple[str, ...]  # output names, in order
    input: str
    input_shape: list[Any]  # ["batch", C, H, W]
    automtl_version: str = field(default=__version__)

    def to_metadata(self) -> dict[str, str]:
        return {"kind": self.KIND.value, "format_version": str(self.FORMAT),
                "automtl_version": self.automtl_version, "format": self.format,
                "source": self.source, "source_kind": self.source_kind,
                "tasks": ",".join(self.tasks), "input": self.input,
                "input_shape": json.dumps(self.input_shape)}


_CLASSES: dict[ArtifactKind, type[Artifact]] = {
    cls.KIND: cls for cls in (SupermodelArtifact, SearchCheckpoint, DerivedModel,
                              FinetuneCheckpoint, FinalModel)}


def load(path: str | os.PathLike, expect: type[A] | tuple[type[A], ...]) -> A:
    """The artifact at `path` as its typed class, refused unless it is one of `expect`."""
    path = Path(path)
    expected = expect if isinstance(expect, tuple) else (expect,)
    data = read_payload(path)
    kind = data["kind"]
    cls = _CLASSES.get(ArtifactKind(kind)) if kind in ArtifactKind._value2member_map_ else None
    if cls is None or cls not in expected:
        wanted = " or ".join(repr(c.KIND.value) for c in expected)
        raise BadInput(f"{path}: is a {kind!r} artifact, expected {wanted}")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BadInput(f"{path}: has no valid format_version ({version!r}); not written by "
                       "automtl, or altered")
    if version > cls.FORMAT:
        raise BadInput(f"{path}: format_version {version} is newer than this automtl "
                       f"({__version__}) reads (up to {cls.FORMAT}); upgrade automtl")
    if version < cls.OLDEST:
        raise BadInput(f"{path}: written by an older automtl (format {version}); make it "
                       "again with this version")
    try:
        return cls.from_payload(data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadInput(f"{path}: the stored {kind} is not readable ({e!r})") from e
