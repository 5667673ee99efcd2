"""The ONNX front end: a `FILE.onnx` model read with the `onnx` package (an optional extra) into
the same IR as a prototxt, its initialisers as the nodes' weights (`convert.py` walks the graph,
`table.py` maps ONNX ops to layer kinds, `fold.py` computes the constant parts).

A run keeps the model itself, base64 text in its source record (`encode_model`), so a later stage
rebuilds the graph at the data's input size without reading the file again.
"""

from __future__ import annotations

import base64

from automtl_cli.frontend.build import read_bytes
from automtl_cli.frontend.onnx.convert import onnx_graph

__all__ = ["decode_model", "encode_model", "is_onnx_spec", "onnx_graph", "read_model"]


def is_onnx_spec(spec: str) -> bool:
    return spec.lower().endswith(".onnx")


def read_model(path: str) -> bytes:
    """The file's bytes; a missing file is exit 66, an unreadable one 65."""
    return read_bytes(path, "an .onnx file")


def encode_model(data: bytes) -> str:
    """The model as the text a source record holds."""
    return base64.b64encode(data).decode("ascii")


def decode_model(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)
