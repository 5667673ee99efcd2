"""Deployment: the derived multi-task network as one ONNX or TorchScript graph, verified.

`fold` flattens the network into one fx graph and folds BatchNorm into convolutions; `verify`
compares runtimes and times them; `export` ties them into `automtl export`.
"""

from __future__ import annotations

from automtl_cli.deploy.export import (
    CannotWrite,
    ExportConfig,
    find_model,
    run_export,
)
from automtl_cli.deploy.fold import fold_batchnorm, fold_skip_branches, trace_network

__all__ = ["CannotWrite", "ExportConfig", "find_model", "fold_batchnorm",
           "fold_skip_branches", "run_export", "trace_network"]
