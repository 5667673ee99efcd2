"""Optional extras, imported where used: a missing one is exit 69 with the line that installs it.

The core install is torch, protobuf, click, numpy and tqdm; Pillow (`images`), matplotlib
(`plot`), onnx (`onnx`, to read ONNX models), safetensors (`weights`, for `.safetensors` state
dicts) and onnx with onnxruntime (`export`) come with extras, so that no command fails to start
because something it does not use is absent.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from automtl_cli.errors import MissingDependency

__all__ = ["require"]


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """`import module`, or a MissingDependency saying what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(f"{purpose} needs {module.split('.')[0]} ({e.name or module} is "
                                f"not installed): pip install 'automtl[{extra}]'") from e
