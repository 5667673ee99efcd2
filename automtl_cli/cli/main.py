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

import logging
import sys
import traceback
from collections.abc import Sequence

import click

from automtl_cli import __version__
from automtl_cli.errors import AutomtlError

__all__ = ["cli", "main"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _StderrFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = {logging.WARNING: "warning: ", logging.ERROR: "error: "}.get(record.levelno, "")
        return prefix + record.getMessage()


def _setup_logging(quiet: bool, debug: bool) -> None:
    root = logging.getLogger("automtl_cli")
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_StderrFormatter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    root.propagate = False


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="automtl")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """Build compact multi-task vision models from a Caffe-style backbone (AutoMTL)."""
    ctx.obj = {"debug": debug, "quiet": quiet}
    _setup_logging(quiet, debug)


def _register_commands() -> None:
    from automtl_cli.cli import (
        compile_cmd,
        data_cmd,
        derive_cmd,
        export_cmd,
        finetune_cmd,
        inspect_cmd,
        run_cmd,
        search_cmd,
    )

    cli.add_command(compile_cmd.compile_)
    cli.add_command(inspect_cmd.inspect)
    cli.add_command(search_cmd.search)
    cli.add_command(derive_cmd.derive)
    cli.add_command(finetune_cmd.finetune)
    cli.add_command(finetune_cmd.eval_)
    cli.add_command(run_cmd.run)
    cli.add_command(export_cmd.export)
    cli.add_command(data_cmd.data)


_register_commands()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status (never raises, never calls sys.exit)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
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
