"""Deployment: the derived multi-task network as one ONNX or TorchScript graph, verified.

`fold` flattens the network into one fx graph and folds BatchNorm into convolutions; `verify`
compares runtimes and times them; `formats` writes each format; `export` ties them together for
the export stage (stages/export.py).
"""

from __future__ import annotations

from automtl_cli.deploy.export import ExportMismatch, export_network
from automtl_cli.deploy.fold import fold_batchnorm, fold_skip_branches, trace_network

__all__ = ["ExportMismatch", "export_network", "fold_batchnorm", "fold_skip_branches",
           "trace_network"]
