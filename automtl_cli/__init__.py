"""automtl: compact multi-task vision models from a backbone you have (the AutoMTL method).

`automtl_cli.compile(module, tasks=..., input_shape=...)` is the Python API (`automtl_cli.api`);
it is imported on first use, so that the CLI's `--version` does not load torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "compile"]


def __getattr__(name: str) -> Any:
    if name == "compile":
        from automtl_cli.api import compile

        return compile
    raise AttributeError(f"module 'automtl_cli' has no attribute {name!r}")
