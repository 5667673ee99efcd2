"""The export stage: RUN/final.pt (else RUN/derived/model.pt) → RUN/export/model.onnx or .ts,
one graph with an output per task, verified against PyTorch (deploy/export.py) before it is
kept. ONNX uses torch's TorchScript-based exporter: no network access or onnxscript is needed,
and the same model gives the same bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automtl_cli.artifacts import ExportManifest, check_writable
from automtl_cli.artifacts.lock import run_lock
from automtl_cli.deploy.export import export_network
from automtl_cli.deploy.formats import EXPORT_FORMATS, INPUT_NAME
from automtl_cli.errors import MissingInput
from automtl_cli.stages.evaluate import load_model

__all__ = ["ExportConfig", "export", "find_model"]


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


def export(run_dir: str | os.PathLike, config: ExportConfig) -> dict[str, Any]:
    """Export, verify and time; returns the figures `--json` prints."""
    with run_lock(run_dir):
        return _export(run_dir, config)


def _export(run_dir: str | os.PathLike, config: ExportConfig) -> dict[str, Any]:
    run = Path(run_dir)
    source, kind = find_model(run, config.model)
    writer = EXPORT_FORMATS.get(config.format)
    writer.require()  # before any work
    output = config.output or run / "export" / f"model{writer.suffix}"
    check_writable(output)
    derived, network = load_model(source)
    graph = derived.graph
    shape = list(graph.shape_of(next(iter(graph.inputs))))
    manifest = ExportManifest(format=config.format, source=str(source), source_kind=kind,
                              tasks=tuple(network.task_names), input=INPUT_NAME,
                              input_shape=["batch", *shape[1:]])
    result = export_network(network, shape, writer, output, manifest.to_metadata(),
                            opset=config.opset, tolerance=config.tolerance, runs=config.runs,
                            seed=config.seed)
    return {"run": str(run), "source": {"path": str(source), "kind": kind},
            "format": config.format, **result}
