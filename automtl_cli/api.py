"""The Python API: `automtl_cli.compile(module_or_source, tasks=..., input_shape=...)`.

The same compile as `automtl compile`, for a module object a user holds (or a path, or a
`"module:NAME"` string). With `out`, the run directory it writes is what the CLI's `search`,
`derive`, `finetune` and `export` continue from; the returned supermodel starts every branch from
the module's weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from automtl_cli.compiler.strategies import BnMode, SkipMode
from automtl_cli.compiler.supermodel import Supermodel, build_supermodel
from automtl_cli.frontend.build import CompileOptions
from automtl_cli.frontend.ir import Graph
from automtl_cli.frontend.sources import build_source, module_source
from automtl_cli.stages.compile import CompileResult, compile_front, compile_stage

__all__ = ["Compiled", "compile"]


@dataclass
class Compiled:
    """What `compile` returns: the checked graph, its summary, the built supermodel (when tasks
    were given) and the files written (when `out` was)."""

    result: CompileResult
    supermodel: Supermodel | None
    files: dict[str, str] = field(default_factory=dict)

    @property
    def graph(self) -> Graph:
        return self.result.graph

    def summary(self) -> dict[str, Any]:
        return self.result.summary()


def compile(source: nn.Module | str | os.PathLike, *, tasks: Sequence[str] = (),
            input_shape: Sequence[int] | None = None, feature: str | None = None,
            weights: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
            bn: str = BnMode.TASK.value, skip: str = SkipMode.REFERENCE.value,
            seed: int = 0) -> Compiled:
    """Compile a backbone (a module object, a prototxt path, `FILE.py:NAME` or
    `package.module:NAME`) into a supermodel for `tasks`; `out=None` writes nothing.

    Bad input raises `automtl_cli.errors.BadInput` (and its subclasses) with the one line the
    CLI prints.
    """
    options = CompileOptions(
        input_shapes={None: tuple(int(d) for d in input_shape)} if input_shape else {},
        feature_blob=feature, weights=os.fspath(weights) if weights is not None else None)
    if isinstance(source, nn.Module):
        front, record = module_source(source, options)
    else:
        front, record = build_source(os.fspath(source), options)
    result = compile_front(front, record, options, tasks=tuple(tasks), bn=bn, skip=skip,
                           seed=seed)
    supermodel = None
    if result.space is not None:
        supermodel = build_supermodel(result.graph, result.space, seed=seed,
                                      weights=front.weights)
    files = compile_stage(result, out) if out is not None else {}
    return Compiled(result, supermodel, files)
