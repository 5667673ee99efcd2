"""Which prototxt family a file belongs to: Caffe's, or the AutoMTL reference implementation's.

The two read through one schema but differ in defaults (pooling rounds up in Caffe and down in
the AutoMTL dialect; BatchNorm carries its own affine γ/β only in the dialect), so the answer
changes shapes and parameter counts. It is decided from fields only one family writes, reported
with the evidence, and can be forced with `--dialect`.
"""

from __future__ import annotations

from dataclasses import dataclass

from automtl_cli.errors import SourceError
from automtl_cli.frontend.textformat import ParsedText

__all__ = ["DIALECTS", "Dialect", "detect_dialect"]

DIALECTS = ("caffe", "automtl")

# Field paths (inside a layer) that only one family writes.
_AUTOMTL_FIELDS = (
    "batch_norm_param.track_running_stats", "batch_norm_param.momentum",
    "batch_norm_param.affine", "relu_param.inplace", "dropout_param.inplace",
)
_CAFFE_FIELDS = (
    "batch_norm_param.use_global_stats", "batch_norm_param.moving_average_fraction",
    "input_param", "scale_param", "pooling_param.ceil_mode",
)


@dataclass(frozen=True)
class Dialect:
    name: str
    reason: str  # the evidence, for the report: "batch_norm_param.track_running_stats at line 31"
    forced: bool = False


def _first(parsed: ParsedText, paths: tuple[str, ...]) -> tuple[str, int] | None:
    for layer in parsed.layers:
        for path in paths:
            line = layer.field_line(path)
            if line is not None:
                return path, line
    return None


def detect_dialect(parsed: ParsedText, file: str, forced: str | None = None) -> Dialect:
    if forced is not None:
        if forced not in DIALECTS:
            raise ValueError(f"unknown dialect {forced!r}; expected one of {', '.join(DIALECTS)}")
        return Dialect(forced, "forced by --dialect", forced=True)
    automtl = _first(parsed, _AUTOMTL_FIELDS)
    caffe = _first(parsed, _CAFFE_FIELDS)
    if caffe is None:
        if parsed.net_lines.get("layers") or any(s.field == "layers" for s in parsed.layers):
            caffe = ("V1 layers {}", parsed.layers[0].line)
        elif "input_shape" in parsed.net_lines:
            caffe = ("input_shape", parsed.net_lines["input_shape"])
    if automtl and caffe:
        raise SourceError(
            f"mixes the AutoMTL dialect ({automtl[0]} at line {automtl[1]}) with Caffe "
            f"({caffe[0]} at line {caffe[1]}); choose one with --dialect caffe|automtl",
            file=file, line=automtl[1])
    if automtl:
        return Dialect("automtl", f"{automtl[0]} at line {automtl[1]}")
    if caffe:
        return Dialect("caffe", f"{caffe[0]} at line {caffe[1]}")
    return Dialect("caffe", "no dialect-specific field; Caffe's defaults apply")
