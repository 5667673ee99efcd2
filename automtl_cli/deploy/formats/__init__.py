"""Export formats, one module per `--format` choice (docs/adding-a-strategy.md)."""

from automtl_cli.deploy.formats import onnx, torchscript  # noqa: F401  (registration)
from automtl_cli.deploy.formats.base import (
    EXPORT_FORMATS,
    INPUT_NAME,
    ExportFormat,
    FormatWriter,
)
from automtl_cli.deploy.formats.onnx import EXTRA_HINT, require_onnx

__all__ = ["EXPORT_FORMATS", "EXTRA_HINT", "INPUT_NAME", "ExportFormat", "FormatWriter",
           "require_onnx"]

EXPORT_FORMATS.check_complete()
