"""`automtl` entry point: the command group, logging set-up, and errors → exit codes.

Exit codes: 0 success, 2 usage, 65 bad input, 66 missing input, 69 an optional extra is not
installed, 70 internal error, 73 an output cannot be written, 75 interrupted (a checkpoint was
written). A traceback is printed only with `--debug`.
"""

from __future__ import annotations

import os

# Before torch is imported: OpenMP threads that spin while waiting make every kernel many times
# slower as soon as another process (a data worker, a second job) wants the same cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib
import logging
import sys
import traceback
from collections.abc import Sequence

import click

from automtl_cli import __version__
from automtl_cli.allocator import keep_freed_memory
from automtl_cli.errors import AutomtlError

__all__ = ["cli", "main"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _StderrFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = {logging.WARNING: "warning: ", logging.ERROR: "error: "}.get(record.levelno, "")
        return prefix + record.getMessage()


def setup_logging(quiet: bool = False, debug: bool = False, *, level: int | None = None
                  ) -> None:
    """automtl's messages on stderr at the level `-q`/`--debug` choose (or `level`)."""
    root = logging.getLogger("automtl_cli")
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StderrFormatter())
    root.addHandler(handler)
    if level is None:
        level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    root.setLevel(level)
    root.propagate = False


# Each command's module imports torch (through the stages it calls); importing only the one a
# command line names keeps `automtl --version` and `automtl --help` from loading it at all.
COMMANDS: dict[str, tuple[str, str, str]] = {  # name → (module, attribute, one-line help)
    "compile": ("compile_cmd", "compile_", "Compile a backbone prototxt into RUN/supermodel.pt "
                                           "and RUN/compile.json."),
    "inspect": ("inspect_cmd", "inspect", "Print the per-layer table of a prototxt, or the "
                                          "summary of an artifact."),
    "search": ("search_cmd", "search", "Search the sharing policy of RUN/supermodel.pt."),
    "derive": ("derive_cmd", "derive", "Derive a compact multi-task network from the search "
                                       "(or a fixed plan)."),
    "finetune": ("finetune_cmd", "finetune", "Train the derived network of RUN; write "
                                             "RUN/final.pt and RUN/metrics.json."),
    "eval": ("finetune_cmd", "eval_", "Metrics of a final (or derived) model on a split."),
    "run": ("run_cmd", "run", "Compile, search, derive and fine-tune, with the baselines; "
                              "print the table."),
    "export": ("export_cmd", "export", "Export RUN's model as one ONNX or TorchScript graph, "
                                       "verified."),
    "data": ("data_cmd", "data", "Look at the datasets automtl reads."),
}


class LazyGroup(click.Group):
    """A group whose commands are imported when the command line names them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(n for n in super().list_commands(ctx) if n not in COMMANDS)]

    def get_command(self, ctx: click.Context | None, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            module, attribute, _ = COMMANDS[name]
            command = getattr(importlib.import_module(f"automtl_cli.cli.{module}"), attribute)
            self.add_command(command, name)
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The list in `--help`, from the table: listing must not import every command."""
        rows = [(name, COMMANDS[name][2]) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="automtl")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """Build compact multi-task vision models from a Caffe-style backbone (AutoMTL)."""
    ctx.obj = {"debug": debug, "quiet": quiet}
    setup_logging(quiet, debug)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status (never raises, never calls sys.exit)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    keep_freed_memory()
    code = 70
    try:
        code = _dispatch(args, debug)
        return code
    finally:
        _leave_process_group(clean=code in (0, 75))


def _leave_process_group(clean: bool) -> None:
    """A command run under torchrun leaves its process group before the interpreter exits;
    a failure to do so is reported, never allowed to replace the exit code."""
    if "torch" not in sys.modules:  # `--version`, `--help`: torch was never imported
        return
    from automtl_cli.engine.distributed import shutdown_distributed

    try:
        shutdown_distributed(clean)
    except Exception as e:  # the command's own outcome matters more
        click.echo(f"warning: leaving the process group failed: {e}", err=True)


def _dispatch(args: list[str], debug: bool) -> int:
    try:
        cli.main(args=args, prog_name="automtl", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return 130
    except AutomtlError as e:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except Exception as e:  # the one place every other failure becomes exit 70
        if debug:
            traceback.print_exc()
        click.echo(f"error: internal error: {type(e).__name__}: {e} "
                   "(rerun with --debug for the traceback)", err=True)
        return 70
    return 0
