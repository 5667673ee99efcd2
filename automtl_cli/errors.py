"""One exception hierarchy for the library; the CLI turns each class into its exit code.

Exit codes follow BSD sysexits, as documented in the README: 65 bad input, 66 missing input,
69 an optional extra is not installed, 70 internal error, 75 interrupted (a checkpoint was
written).
"""

from __future__ import annotations

__all__ = [
    "AutomtlError",
    "BadInput",
    "Interrupted",
    "MissingDependency",
    "MissingInput",
    "SourceError",
]


class AutomtlError(Exception):
    """Base of every error automtl reports to a user; `exit_code` is the process status."""

    exit_code = 70


class BadInput(AutomtlError):
    """The input exists but is wrong: a prototxt, a config, a dataset's content."""

    exit_code = 65


class MissingInput(AutomtlError):
    """A file, directory or checkpoint the command needs does not exist."""

    exit_code = 66


class MissingDependency(AutomtlError):
    """An optional extra (matplotlib, onnx, ...) is needed and not installed."""

    exit_code = 69


class CannotWrite(AutomtlError):
    """An output file cannot be created or written (BSD sysexits EX_CANTCREAT)."""

    exit_code = 73


class Interrupted(AutomtlError):
    """The run was stopped by a signal after writing a checkpoint; `--resume` continues it."""

    exit_code = 75


class SourceError(BadInput):
    """A problem at a place in a source file, rendered as `FILE:LINE: layer "NAME" (TYPE): what`."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        layer: str | None = None,
        layer_type: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.layer = layer
        self.layer_type = layer_type
        super().__init__(str(self))

    def located(self, *, file: str | None = None, line: int | None = None,
                layer: str | None = None, layer_type: str | None = None) -> SourceError:
        """Fill in whatever place information is still missing (inner code knows less)."""
        self.file = self.file or file
        self.line = self.line or line
        self.layer = self.layer if self.layer is not None else layer
        self.layer_type = self.layer_type or layer_type
        self.args = (str(self),)
        return self

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        elif self.line:
            where = f"line {self.line}: "
        if self.layer is not None:
            kind = f" ({self.layer_type})" if self.layer_type else ""
            where += f'layer "{self.layer}"{kind}: '
        return where + self.message
