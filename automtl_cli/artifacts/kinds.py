"""The kinds of file automtl writes, and the newest format of each this version reads."""

from __future__ import annotations

from automtl_cli.registry import Choice

__all__ = ["ArtifactKind"]


class ArtifactKind(Choice):
    """Every kind of file automtl writes; the value is what the file stores as `kind`."""

    SUPERMODEL = "supermodel"  # RUN/supermodel.pt (compile)
    SEARCH_CHECKPOINT = "search-checkpoint"  # RUN/search/step-N.pt, last.pt
    DERIVED_MODEL = "derived-model"  # RUN/derived/model.pt
    FINETUNE_CHECKPOINT = "finetune-checkpoint"  # RUN/finetune/step-N.pt, last.pt
    FINAL_MODEL = "final-model"  # RUN/final.pt
    EXPORT = "automtl-export"  # the metadata inside RUN/export/model.onnx or .ts
    PLAN = "automtl-plan"  # RUN/derived/plan.json (JSON: the choices and their cost)
