"""`--format torchscript`: a traced `torch.jit` module, what libtorch runtimes load."""

from __future__ import annotations

import json
import warnings

import torch
from torch import fx

from automtl_cli.deploy.formats.base import EXPORT_FORMATS, ExportFormat
from automtl_cli.deploy.verify import Runtime, torch_runtime


@EXPORT_FORMATS.register(ExportFormat.TORCHSCRIPT)
class TorchScriptWriter:
    suffix = ".ts"

    def require(self) -> None:
        """torch.jit ships with torch."""

    def write(self, gm: fx.GraphModule, example: torch.Tensor, tasks: tuple[str, ...],
              tmp: str, opset: int, metadata: dict[str, str]) -> tuple[Runtime, int, str]:
        with warnings.catch_warnings():
            # torch.jit is deprecated in favour of torch.export, but it is what TorchScript
            # runtimes (libtorch) load; the traced shapes are fixed except the batch.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(gm, (example,))
            torch.jit.save(traced, tmp, _extra_files={"automtl.json": json.dumps(metadata)})
            loaded = torch.jit.load(tmp, map_location="cpu").eval()
        convs = sum(1 for n in loaded.inlined_graph.nodes()
                    if n.kind() in ("aten::_convolution", "aten::conv2d"))
        return torch_runtime(loaded), convs, f"torch.jit (torch {torch.__version__})"

