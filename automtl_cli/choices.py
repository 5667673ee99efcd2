"""The names of every switch a user types, in one module that imports nothing heavy.

Each strategy axis (docs/adding-a-strategy.md) keeps its interface, registry and
implementations in its own package; its `Choice` enum lives here, re-exported by the axis's
`base.py`, so that the command line can build its options and `automtl COMMAND --help` can
answer without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from automtl_cli.registry import Choice, parse_choice

__all__ = ["BnMode", "Budget", "DeriveMode", "Estimator", "ExportFormat", "Init",
           "MetricVariant", "ParamBudget", "Precision", "Regularizer", "SkipMode", "Stage",
           "StepMode"]


class BnMode(Choice):
    """`--bn`: how a BatchNorm after a search node is shared (compiler/strategies/bn)."""

    TASK = "task"
    FOLLOW = "follow"
    SHARED = "shared"


class SkipMode(Choice):
    """`--skip`: what a node's skip branch is (compiler/strategies/skip)."""

    REFERENCE = "reference"
    CHEAP = "cheap"


class Stage(Choice):
    """The supermodel's forward stages (compiler/strategies/stage)."""

    WARMUP = "warmup"
    SOFT = "soft"
    HARD = "hard"
    GDAS = "gdas"
    DARTS = "darts"


class Estimator(Choice):
    """`search --estimator`: how a search step's forward pass mixes the branches
    (engine/estimators.py)."""

    SOFT = "soft"  # the Gumbel-softmax mixture of every branch (the reference)
    GDAS = "gdas"  # only the sampled branch runs, with a straight-through gradient
    DARTS = "darts"  # softmax(α/τ) without Gumbel noise: DARTS' relaxation, the noise ablation

    @property
    def stage(self) -> Stage:
        """The supermodel forward stage that implements this estimator."""
        return Stage(self.value)


class Regularizer(Choice):
    """`search --reg` (engine/regularizers)."""

    REFERENCE = "reference"  # AutoMTL's: push the shared branch above the others, by depth
    PARAMS = "params"  # the expected parameter count of the derived network
    NONE = "none"  # no sharing pressure: the paper's "w/o reg" ablation


class StepMode(Choice):
    """`search --step` (engine/stepping)."""

    SUM = "sum"  # one step on the weighted sum of the task losses
    PER_TASK = "per-task"  # the reference's: one step per task, each on its own batch


class DeriveMode(Choice):
    """`derive --mode`, `run --derive` (engine/plans)."""

    SAMPLE = "sample"  # one seeded draw per node and task from softmax(α) (the reference)
    ARGMAX = "argmax"  # the most likely branch
    SHARED = "shared"  # hard sharing
    SPECIFIC = "specific"  # one network per task
    RANDOM = "random"  # uniform draws (the paper's random-plan ablation)
    FILE = "file"  # a plan.json edited by hand


class Init(Choice):
    """`finetune --init`, `run --init` (engine/inits)."""

    SCRATCH = "scratch"  # the seed's fresh weights (the paper's retraining)
    SEARCH = "search"  # the weights the search trained, for the branches the plan kept
    PRETRAINED = "pretrained"  # the backbone's pretrained weights, for the branches kept


class ExportFormat(Choice):
    """`export --format` (deploy/formats)."""

    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"


class MetricVariant(Choice):
    """Which evaluation rules a metric follows (tasks/metrics.py, docs/method.md §6)."""

    CORRECT = "correct"
    REFERENCE = "reference"

    @classmethod
    def parse(cls, value: MetricVariant | str) -> MetricVariant:
        """A variant from its name (a flag or a stored config); unknown names list the known."""
        return parse_choice("metric variant", cls, value)


class Budget(Choice):
    """`run --budget`: how long the baselines train (stages/run.py)."""

    EQUAL = "equal"  # as many weight updates as AutoMTL's search and fine-tuning together
    FINETUNE = "finetune"  # the fine-tuning iterations alone (the paper's tables)


class Precision(Choice):
    """`--precision` of search, finetune, eval and run (engine/precision.py)."""

    FP32 = "fp32"  # float32 throughout (the default, the reference's)
    BF16 = "bf16"  # autocast to bfloat16, float32 master weights


_SIZE_SUFFIXES = {"k": 1e3, "m": 1e6, "g": 1e9}


@dataclass(frozen=True)
class ParamBudget:
    """`--max-params`: the largest derived network wanted, in parameters (heads included).

    `0.6x` is a fraction of the single-task networks' total (what the results table compares
    against); `2.5M`, `800k` or `2500000` is a count.
    """

    fraction: float | None = None  # of the T single-task networks
    count: int | None = None

    @classmethod
    def parse(cls, text: str) -> ParamBudget:
        value = str(text).strip().lower()
        try:
            if value.endswith(("x", "×")):
                fraction = float(value[:-1])
                if not fraction > 0:
                    raise ValueError
                return cls(fraction=fraction)
            scale = _SIZE_SUFFIXES.get(value[-1:], 1.0)
            number = float(value[:-1] if value[-1:] in _SIZE_SUFFIXES else value)
            if not number > 0:
                raise ValueError
            return cls(count=round(number * scale))
        except ValueError:
            raise ValueError(f"{text!r} is not a parameter budget: give a fraction of the "
                             "single-task networks like 0.6x, or a count like 2.5M, 800k "
                             "or 2500000") from None

    def limit(self, single_task_networks: int) -> int:
        """The budget in parameters, given the single-task networks' total."""
        if self.count is not None:
            return self.count
        return int(self.fraction * single_task_networks)

    def __str__(self) -> str:
        return f"{self.fraction:g}x" if self.count is None else f"{self.count:,}"
