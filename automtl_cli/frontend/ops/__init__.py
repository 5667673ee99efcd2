"""The op table: everything automtl knows about each prototxt layer type, one class per type.

`base.py` defines the interface (`LayerKind`) and the registry; each family module registers its
kinds on import, which this package does for all of them. Callers look kinds up by type name
(`LAYER_KINDS[node.type]`, `get_kind(name)`). `docs/adding-an-op.md` says how to add one.
"""

from __future__ import annotations

from automtl_cli.frontend.ops import (  # noqa: F401  (imported to register the kinds)
    activation,
    convolution,
    data,
    joins,
    normalisation,
    pooling,
    reshape,
    resize,
)
from automtl_cli.frontend.ops.base import (
    LAYER_KINDS,
    Attrs,
    LayerKind,
    LayerText,
    ReadContext,
    Shape,
    ShapeError,
    get_kind,
    register_layer,
)

__all__ = ["LAYER_KINDS", "Attrs", "LayerKind", "LayerText", "ReadContext", "Shape", "ShapeError",
           "get_kind", "register_layer"]
