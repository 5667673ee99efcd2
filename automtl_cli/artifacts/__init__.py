"""Artifacts on disk: self-describing, typed, written atomically, loaded as data (never code).

`io` is the one atomic writer; `kinds` the enum of kinds; `types` a frozen dataclass per kind
and `load(path, expect=Class)` (docs/artifacts.md).
"""

from automtl_cli.artifacts.io import (
    atomic_copy,
    atomic_write,
    check_writable,
    read_payload,
    save_payload,
    write_json,
    write_text,
)
from automtl_cli.artifacts.kinds import ArtifactKind
from automtl_cli.artifacts.types import (
    Artifact,
    DerivedModel,
    ExportManifest,
    FinalModel,
    FinetuneCheckpoint,
    SearchCheckpoint,
    SupermodelArtifact,
    load,
)

__all__ = [
    "Artifact",
    "ArtifactKind",
    "DerivedModel",
    "ExportManifest",
    "FinalModel",
    "FinetuneCheckpoint",
    "SearchCheckpoint",
    "SupermodelArtifact",
    "atomic_copy",
    "atomic_write",
    "check_writable",
    "load",
    "read_payload",
    "save_payload",
    "write_json",
    "write_text",
]
