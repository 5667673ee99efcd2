"""A derived multi-task network as ONE ONNX or TorchScript graph, verified before it is kept.

The network is flattened into one fx graph with BatchNorm folded (fold.py),
checked equal to the network as loaded, exported with input `image` (dynamic batch) and one
output per task, named after the task, and checked again through the runtime that will serve it
(onnxruntime for ONNX, `torch.jit.load` for TorchScript) on batches of 1 and 8 before it is
moved into place; a model that disagrees is never written. Which file the stage exports and
where it goes is the export stage's (stages/export.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn

from automtl_cli.artifacts import atomic_write
from automtl_cli.deploy.fold import FoldedSkip, fold_batchnorm, fold_skip_branches, trace_network
from automtl_cli.deploy.formats import INPUT_NAME, FormatWriter
from automtl_cli.deploy.verify import (
    Runtime,
    compare,
    example_batch,
    median_latency_ms,
    torch_runtime,
)
from automtl_cli.errors import AutomtlError, CannotWrite

__all__ = ["ExportMismatch", "export_network"]


class ExportMismatch(AutomtlError):
    """The folded or exported model does not compute what the PyTorch one does (a bug)."""

    exit_code = 70


def _count_convolutions(gm: fx.GraphModule) -> int:
    modules = dict(gm.named_modules())
    return sum(1 for n in gm.graph.nodes if n.op == "call_module"
               and isinstance(modules[n.target], (nn.Conv2d, FoldedSkip)))


def _remaining_batchnorms(gm: fx.GraphModule) -> int:
    modules = dict(gm.named_modules())
    return sum(1 for n in gm.graph.nodes if n.op == "call_module"
               and isinstance(modules[n.target], nn.modules.batchnorm._BatchNorm))


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


def _write_verified(gm: fx.GraphModule, writer: FormatWriter, output: Path, check: _Check,
                    opset: int, metadata: dict[str, str]) -> dict[str, Any]:
    """Export to a temporary file, check it through its runtime, then move it into place."""
    outcome: dict[str, Any] = {}

    def write(tmp: str) -> None:
        runtime, convs, name = writer.write(gm, check.batches[0], check.tasks, tmp, opset,
                                            metadata)
        diff = check.against(runtime, "the exported model")
        outcome.update(runtime=runtime, convolutions=convs, name=name, diff=diff)

    try:
        atomic_write(output, write)
    except OSError as e:
        raise CannotWrite(f"{output}: cannot write ({e.strerror or e})") from e
    return outcome


def export_network(network: nn.Module, input_shape: list[int], writer: FormatWriter,
                   output: Path, metadata: dict[str, str], *, opset: int, tolerance: float,
                   runs: int, seed: int) -> dict[str, Any]:
    """Fold, export, verify on batches of 8 and 1, and time; returns the figures."""
    network.eval()
    tasks = tuple(network.task_names)
    batches = [example_batch(input_shape, 8, seed), example_batch(input_shape, 1, seed + 1)]
    reference = torch_runtime(network, tasks)
    check = _Check(reference, batches, tasks, tolerance * _scale(reference, batches))
    gm, folded = _fold(network, check)
    written = _write_verified(gm, writer, output, check, opset, metadata)
    latency = {f"batch_{len(x)}": {
        "pytorch_ms": round(median_latency_ms(reference, x, runs=runs), 4),
        "exported_ms": round(median_latency_ms(written["runtime"], x, runs=runs), 4)}
        for x in sorted(batches, key=len)}
    return {
        "output": str(output), "tasks": list(tasks), "runtime": written["name"],
        "input": {"name": INPUT_NAME, "shape": ["batch", *input_shape[1:]]},
        "outputs": {t: ["batch", *o.shape[1:]] for t, o in zip(tasks, reference(batches[1]))},
        "folded": folded, "convolutions": written["convolutions"],
        "verification": {
            "batch_sizes": [len(x) for x in batches],
            "max_abs_diff": max(written["diff"].values()), "per_task": written["diff"],
            "limit": check.limit},
        "latency_ms": latency, "threads": torch.get_num_threads(),
    }
