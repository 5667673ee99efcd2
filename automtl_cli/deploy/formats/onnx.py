"""`--format onnx`: torch's TorchScript-based ONNX exporter, checked through onnxruntime.

The TorchScript-based exporter (`dynamo=False`) needs no network access or onnxscript, and the
same model gives the same bytes. onnx and onnxruntime are an optional extra.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import fx

from automtl_cli.deploy.formats.base import EXPORT_FORMATS, INPUT_NAME, ExportFormat
from automtl_cli.deploy.verify import Runtime
from automtl_cli.errors import MissingDependency

EXTRA_HINT = "pip install 'automtl[export]'"


def require_onnx() -> tuple[Any, Any]:
    """The onnx and onnxruntime modules, or a MissingDependency naming the extra."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise MissingDependency(f"ONNX export needs onnx and onnxruntime ({e.name or e} is "
                                f"not installed): {EXTRA_HINT}") from e
    return onnx, onnxruntime


@EXPORT_FORMATS.register(ExportFormat.ONNX)
class OnnxWriter:
    suffix = ".onnx"

    def require(self) -> None:
        require_onnx()

    def write(self, gm: fx.GraphModule, example: torch.Tensor, tasks: tuple[str, ...],
              tmp: str, opset: int, metadata: dict[str, str]) -> tuple[Runtime, int, str]:
        return _write_onnx(gm, example, tasks, tmp, opset, metadata)


def _write_onnx(gm: fx.GraphModule, example: torch.Tensor, tasks: tuple[str, ...], tmp: str,
                opset: int, metadata: dict[str, str]) -> tuple[Runtime, int, str]:
    onnx, ort = require_onnx()
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *tasks)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(gm, (example,), tmp, input_names=[INPUT_NAME],
                          output_names=list(tasks), dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    model = onnx.load(tmp)
    _drop_initializer_identities(model)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, tmp)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same cores as PyTorch gets
    options.log_severity_level = 3
    session = ort.InferenceSession(tmp, options, providers=["CPUExecutionProvider"])
    convs = sum(1 for node in model.graph.node if node.op_type == "Conv")

    def run(x: torch.Tensor) -> list:
        return session.run(list(tasks), {INPUT_NAME: x.numpy()})

    return run, convs, f"onnxruntime {ort.__version__}"


def _drop_initializer_identities(model: Any) -> None:
    """Read byte-equal initializers directly (the exporter deduplicates them via Identity)."""
    inits = {i.name for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    alias = {n.output[0]: n.input[0] for n in model.graph.node
             if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs}
    if not alias:
        return
    kept = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = alias.get(name, name)
    del model.graph.node[:]
    model.graph.node.extend(kept)

