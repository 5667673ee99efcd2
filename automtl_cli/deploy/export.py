"""`automtl export`: the derived multi-task network as ONE ONNX or TorchScript graph, verified.

The model exported is the trained one (`RUN/final.pt`) when it exists, else the derived one
(`RUN/derived/model.pt`). It is flattened into one fx graph with BatchNorm folded (fold.py),
checked equal to the network as loaded, exported with input `image` (dynamic batch) and one
output per task, named after the task, and checked again through the runtime that will serve it
(onnxruntime for ONNX, `torch.jit.load` for TorchScript) on batches of 1 and 8 before it is
moved into place; a model that disagrees is never written. ONNX uses torch's TorchScript-based
exporter (`dynamo=False`): it needs no network access or onnxscript, and the same model gives
the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from automtl_cli import __version__
from automtl_cli.artifacts import ArtifactKind, atomic_write
from automtl_cli.deploy.fold import FoldedSkip, fold_batchnorm, fold_skip_branches, trace_network
from automtl_cli.deploy.formats import EXPORT_FORMATS, INPUT_NAME
from automtl_cli.deploy.verify import (
    Runtime,
    compare,
    example_batch,
    median_latency_ms,
    torch_runtime,
)
from automtl_cli.errors import AutomtlError, MissingInput

__all__ = ["CannotWrite", "ExportConfig", "find_model", "run_export"]

logger = logging.getLogger(__name__)

EXPORT_FORMAT = 1


class CannotWrite(AutomtlError):
    """The output file cannot be created or written (BSD sysexits EX_CANTCREAT)."""

    exit_code = 73


class ExportMismatch(AutomtlError):
    """The folded or exported model does not compute what the PyTorch one does (a bug)."""

    exit_code = 70


@dataclass(frozen=True)
class ExportConfig:
    format: str = "onnx"
    output: Path | None = None  # default RUN/export/model.onnx or model.ts
    model: Path | None = None  # default RUN/final.pt, else RUN/derived/model.pt
    opset: int = 17
    tolerance: float = 1e-4  # largest |difference|, relative to the outputs' scale above 1
    runs: int = 20  # timed runs per latency figure
    seed: int = 0  # of the verification images

    def __post_init__(self) -> None:
        EXPORT_FORMATS.member(self.format)
        if self.tolerance <= 0 or self.runs < 1 or self.opset < 9:
            raise ValueError("tolerance > 0, runs ≥ 1 and opset ≥ 9 are needed")


def find_model(run: Path, model: Path | None = None) -> tuple[Path, str]:
    """The model to export and what it is: `final` (trained) or `derived` (not fine-tuned)."""
    if model is not None:
        if not model.is_file():
            raise MissingInput(f"{model}: no such model file")
        return model, "given"
    if (run / "final.pt").is_file():
        return run / "final.pt", "final"
    if (run / "derived" / "model.pt").is_file():
        return run / "derived" / "model.pt", "derived"
    raise MissingInput(f"{run / 'derived' / 'model.pt'}: no derived model to export; run "
                       f"`automtl derive {run}` first")


def _check_writable(path: Path) -> None:
    """Fail early, with one line, when `path` cannot be created (before minutes of work)."""
    if path.is_dir():
        raise CannotWrite(f"{path}: is a directory; give a file name with -o")
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise CannotWrite(f"{path}: cannot create it, {blocker} is a file, not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CannotWrite(f"{path}: cannot write here ({e.strerror or e})") from e


def _count_convolutions(gm: fx.GraphModule) -> int:
    modules = dict(gm.named_modules())
    return sum(1 for n in gm.graph.nodes if n.op == "call_module"
               and isinstance(modules[n.target], (nn.Conv2d, FoldedSkip)))


def _remaining_batchnorms(gm: fx.GraphModule) -> int:
    modules = dict(gm.named_modules())
    return sum(1 for n in gm.graph.nodes if n.op == "call_module"
               and isinstance(modules[n.target], nn.modules.batchnorm._BatchNorm))


def _metadata(source: Path, kind: str, tasks: tuple[str, ...], shape: list[int],
              fmt: str) -> dict[str, str]:
    return {"kind": ArtifactKind.EXPORT.value, "format_version": str(EXPORT_FORMAT),
            "automtl_version": __version__, "format": fmt, "source": str(source),
            "source_kind": kind, "tasks": ",".join(tasks), "input": INPUT_NAME,
            "input_shape": json.dumps(["batch", *shape[1:]])}


def _scale(runtime: Runtime, batches: list[torch.Tensor]) -> float:
    return max(1.0, max(float(abs(o).max(initial=0.0)) for x in batches for o in runtime(x)))


@dataclass
class _Check:
    """What the verification of one model found."""

    reference: Runtime  # the network as loaded, in eval mode
    batches: list[torch.Tensor]
    tasks: tuple[str, ...]
    limit: float

    def against(self, runtime: Runtime, what: str) -> dict[str, float]:
        diff = compare(self.reference, runtime, self.batches, self.tasks)
        if max(diff.values()) > self.limit:
            raise ExportMismatch(f"{what} differs from the PyTorch model by up to "
                                 f"{max(diff.values()):.3g} (limit {self.limit:.3g}); "
                                 "not written")
        return diff


def _fold(network: nn.Module, check: _Check) -> tuple[fx.GraphModule, dict[str, Any]]:
    """The flat, folded graph, checked equal to the network before anything is exported."""
    gm = trace_network(network)
    skips = fold_skip_branches(gm)
    folded: dict[str, Any] = {"batchnorm": fold_batchnorm(gm), "skip_branches": skips,
                              "batchnorm_left": _remaining_batchnorms(gm)}
    folded["max_abs_diff"] = max(check.against(torch_runtime(gm), "the folded graph").values())
    return gm, folded


def _write_verified(gm: fx.GraphModule, config: ExportConfig, output: Path, check: _Check,
                    metadata: dict[str, str]) -> dict[str, Any]:
    """Export to a temporary file, check it through its runtime, then move it into place."""
    outcome: dict[str, Any] = {}

    def write(tmp: str) -> None:
        runtime, convs, name = EXPORT_FORMATS[config.format].write(
            gm, check.batches[0], check.tasks, tmp, config.opset, metadata)
        diff = check.against(runtime, "the exported model")
        outcome.update(runtime=runtime, convolutions=convs, name=name, diff=diff)

    try:
        atomic_write(output, write)
    except OSError as e:
        raise CannotWrite(f"{output}: cannot write ({e.strerror or e})") from e
    return outcome


def run_export(run_dir: str | os.PathLike, config: ExportConfig) -> dict[str, Any]:
    """Export, verify and time; returns the figures `--json` prints."""
    from automtl_cli.engine.finetune import load_model

    run = Path(run_dir)
    source, kind = find_model(run, config.model)
    writer = EXPORT_FORMATS[config.format]
    writer.require()  # before any work
    output = config.output or run / "export" / f"model{writer.suffix}"
    _check_writable(output)
    derived, network = load_model(source)
    network.eval()
    tasks = tuple(network.task_names)
    graph = derived["graph"]
    shape = list(graph.shape_of(next(iter(graph.inputs))))
    batches = [example_batch(shape, 8, config.seed), example_batch(shape, 1, config.seed + 1)]
    reference = torch_runtime(network, tasks)
    check = _Check(reference, batches, tasks, config.tolerance * _scale(reference, batches))
    gm, folded = _fold(network, check)
    metadata = _metadata(source, kind, tasks, shape, config.format)
    written = _write_verified(gm, config, output, check, metadata)
    latency = {f"batch_{len(x)}": {
        "pytorch_ms": round(median_latency_ms(reference, x, runs=config.runs), 4),
        "exported_ms": round(median_latency_ms(written["runtime"], x, runs=config.runs), 4)}
        for x in sorted(batches, key=len)}
    return {
        "run": str(run), "source": {"path": str(source), "kind": kind}, "format": config.format,
        "output": str(output), "tasks": list(tasks), "runtime": written["name"],
        "input": {"name": INPUT_NAME, "shape": ["batch", *shape[1:]]},
        "outputs": {t: ["batch", *o.shape[1:]] for t, o in zip(tasks, reference(batches[1]))},
        "folded": folded, "convolutions": written["convolutions"],
        "verification": {
            "batch_sizes": [len(x) for x in batches],
            "max_abs_diff": max(written["diff"].values()), "per_task": written["diff"],
            "limit": check.limit},
        "latency_ms": latency, "threads": torch.get_num_threads(),
    }
