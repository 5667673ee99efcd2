"""The compile stage: a backbone prototxt → the `supermodel` artifact a search starts from."""

from automtl_cli.compiler.stage import (
    SUPERMODEL_FORMAT,
    CompileResult,
    compile_backbone,
    load_supermodel,
    write_compile_outputs,
)

__all__ = [
    "SUPERMODEL_FORMAT",
    "CompileResult",
    "compile_backbone",
    "load_supermodel",
    "write_compile_outputs",
]
