"""The front end's passes, prototxt layers → shaped IR, each a function over one `BuildState`.

In the order `automtl_cli.frontend.build` runs them: `UniqueNames` (while the text is read),
`collect_layers` (V1 upgraded), `keep_test_phase`, `choose_outputs` (which drops what feeds no
output, so that it is never checked), `check_types`, `check_unknown_fields`;
`declare_header_inputs`; `infer_shapes` (which resolves in-place tops to SSA values and declares
Input and data layers as it meets them); `cut_at_feature`; `fold_batchnorm_scale`;
`share_named_params`; `number_depths`.
"""

from __future__ import annotations

from automtl_cli.frontend.passes.cut import choose_outputs, cut_at_feature
from automtl_cli.frontend.passes.rewrite import (
    fold_batchnorm_scale,
    number_depths,
    share_named_params,
)
from automtl_cli.frontend.passes.shapes import infer_shapes
from automtl_cli.frontend.passes.source import (
    UniqueNames,
    check_types,
    check_unknown_fields,
    collect_layers,
    keep_test_phase,
)
from automtl_cli.frontend.passes.state import BuildState, SourceLayer
from automtl_cli.frontend.passes.values import declare_header_inputs

__all__ = ["BuildState", "SourceLayer", "UniqueNames", "check_types", "check_unknown_fields",
           "choose_outputs", "collect_layers", "cut_at_feature", "declare_header_inputs",
           "fold_batchnorm_scale", "infer_shapes", "keep_test_phase", "number_depths",
           "share_named_params"]
