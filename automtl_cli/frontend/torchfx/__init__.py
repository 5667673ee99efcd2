"""The PyTorch front end: an `nn.Module` named `FILE.py:NAME` or `package.module:NAME`, traced
with torch.fx into the same IR as a prototxt (`load.py` finds and builds the module, `table.py`
maps torch ops to layer kinds, `trace.py` traces and assembles the graph)."""

from __future__ import annotations

from automtl_cli.frontend.torchfx.load import (
    TorchSpec,
    is_torch_spec,
    load_module,
    parse_spec,
    source_text,
)
from automtl_cli.frontend.torchfx.trace import node_weights, trace_module

__all__ = ["TorchSpec", "is_torch_spec", "load_module", "node_weights", "parse_spec",
           "source_text", "trace_module"]
