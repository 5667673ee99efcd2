"""What the front end's passes share while a file becomes a graph: one `BuildState`.

The passes read and write these fields instead of each other's locals; `BuildState.err` makes
every user-facing failure a `SourceError` that names the file, the line and the layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from automtl_cli.errors import SourceError
from automtl_cli.frontend.dialect import Dialect
from automtl_cli.frontend.ir import Node, Shape
from automtl_cli.frontend.textformat import LayerSource, ParsedText
from automtl_cli.proto import automtl_pb2 as pb

if TYPE_CHECKING:
    from automtl_cli.frontend.build import CompileOptions

__all__ = ["BuildState", "SourceLayer"]


@dataclass
class SourceLayer:
    """One source layer, upgraded to V2, with its place in the file."""

    message: Message
    source: LayerSource
    index: int  # position among all layers of the file

    @property
    def name(self) -> str:
        return self.message.name or f"#{self.index}"

    @property
    def type(self) -> str:
        return self.message.type


@dataclass
class BuildState:
    file: str
    options: CompileOptions
    net: pb.NetParameter
    parsed: ParsedText
    warn: Callable[[str], None]
    dialect: Dialect | None = None
    layers: list[SourceLayer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what a user may want to know
    warnings: list[str] = field(default_factory=list)
    # SSA values: every write of a blob is a new value (`name`, then `name@1`, ...).
    latest: dict[str, str] = field(default_factory=dict)  # blob name → its current value
    versions: dict[str, int] = field(default_factory=dict)  # blob name → writes so far - 1
    value_blob: dict[str, str] = field(default_factory=dict)  # value → blob, in definition order
    shapes: dict[str, Shape] = field(default_factory=dict)  # value → shape (labels have none)
    inputs: dict[str, Shape] = field(default_factory=dict)  # input value → shape
    overrides: dict[str | None, Shape] = field(default_factory=dict)  # --input-shape not yet used
    nodes: list[Node] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # loss/accuracy layers removed
    source_layers: int = 0  # prototxt layers that made it into the graph
    # blob name → index of the first layer writing it, dropped layers included (for hints)
    first_writer: dict[str, int] = field(default_factory=dict)
    output_blobs: list[str] = field(default_factory=list)  # blob names, by `choose_outputs`
    outputs: list[str] = field(default_factory=list)  # their SSA values, by `cut_at_feature`

    def err(self, message: str, layer: SourceLayer | None = None, path: str | None = None,
            line: int | None = None) -> SourceError:
        if layer is None:
            return SourceError(message, file=self.file, line=line)
        return SourceError(message, file=self.file,
                           line=line or (layer.source.line_of(path) if path else layer.source.line),
                           layer=layer.name, layer_type=layer.type or "no type")

    def warning(self, message: str) -> None:
        self.warnings.append(message)
        self.warn(message)
