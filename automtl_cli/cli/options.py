"""Option types and bundles shared by several commands."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from typing import Any

import click

from automtl_cli.choices import BnMode, ParamBudget, Precision, SkipMode
from automtl_cli.frontend.dialect import DIALECTS

__all__ = ["InputShape", "ParamBudgetType", "TaskList", "choice_of", "deterministic_option",
           "emit_json", "frontend_options", "max_params_option", "precision_option",
           "resolve_device", "search_space_options"]


def choice_of(choices: type[enum.Enum], *only: enum.Enum) -> click.Choice:
    """A click choice of a strategy enum's values (or of the members `only`)."""
    return click.Choice([m.value for m in (only or choices)])


class InputShape(click.ParamType):
    """`N,C,H,W`, or `NAME=N,C,H,W` for a network with several inputs."""

    name = "N,C,H,W"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, tuple):
            return value
        name, _, dims = str(value).rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(","))
        except ValueError:
            self.fail(f"{value!r} is not a list of integers like 1,3,224,224", param, ctx)
        if not shape or any(d < 1 for d in shape):
            self.fail(f"{value!r}: every dimension must be a positive integer", param, ctx)
        return (name or None, shape)


class ParamBudgetType(click.ParamType):
    """`0.6x` (of the single-task networks) or a count: `2.5M`, `800k`, `2500000`."""

    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, ParamBudget):
            return value
        try:
            return ParamBudget.parse(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


def max_params_option(f: Callable) -> Callable:
    """`--max-params`: the derived network's size budget (derive and run)."""
    return click.option(
        "--max-params", type=ParamBudgetType(), metavar="SIZE",
        help="Derive the most likely plan whose network (heads included) has at most SIZE "
             "parameters: 0.6x of the single-task networks, or a count like 2.5M.")(f)


def frontend_options(f: Callable) -> Callable:
    """The options that change how a backbone is read (compile and inspect share them)."""
    f = click.option("--lenient", is_flag=True,
                     help="Warn about unknown fields (once per field) instead of failing.")(f)
    f = click.option("--feature-blob", "--feature", "feature_blob", metavar="NAME",
                     help="Cut the network after the last layer writing this blob (several, "
                          "comma-separated, keep several outputs), or for a PyTorch module after "
                          "the module at this path (layer4, features.16). Default: the last "
                          "layer's output; other branches are dropped with a note.")(f)
    f = click.option("--input-shape", "input_shapes", type=InputShape(), multiple=True,
                     help="Set or override the input shape (NAME=N,C,H,W for several inputs).")(f)
    f = click.option("--dialect", type=click.Choice(DIALECTS),
                     help="Force the prototxt dialect instead of detecting it.")(f)
    return f


class TaskList(click.ParamType):
    """`seg,depth,normal`."""

    name = "TASKS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, tuple):
            return value
        tasks = tuple(t.strip() for t in str(value).split(",") if t.strip())
        if not tasks:
            self.fail("give at least one task, e.g. seg,depth,normal", param, ctx)
        return tasks


def search_space_options(f: Callable) -> Callable:
    f = click.option("--skip", type=choice_of(SkipMode),
                     default=SkipMode.REFERENCE.value, show_default=True,
                     help="Skip branch: the reference's (1x1 conv + BN where shapes change) or "
                          "cheap (parameter-free).")(f)
    f = click.option("--bn", type=choice_of(BnMode), default=BnMode.TASK.value,
                     show_default=True,
                     help="BatchNorm: per task (reference), follow the conv's branch, or "
                          "shared.")(f)
    f = click.option("--tasks", type=TaskList(), default=None,
                     help="Comma-separated task names (may also be given to `search`).")(f)
    return f


def precision_option(f):
    """`--precision fp32|bf16`: bf16 runs the forward passes under autocast (float32 master
    weights; engine/precision.py)."""
    return click.option("--precision", type=choice_of(Precision), default=None,
                        help="fp32 (default) or bf16: forward passes under bfloat16 autocast, "
                             "float32 master weights.")(f)


def resolve_device(name: str) -> str:
    """`auto` is the GPU when there is one; an unavailable CUDA device is a usage error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine", param_hint="--device")
    if name != "cpu" and not name.startswith("cuda"):
        raise click.BadParameter(f"{name!r} is not auto, cpu or cuda[:N]", param_hint="--device")
    return name


def _enable_deterministic(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        from automtl_cli.seeding import enable_deterministic

        enable_deterministic()
    return value


def deterministic_option(f: Callable) -> Callable:
    """`--deterministic`: deterministic kernels only (matters on CUDA; CPU already is)."""
    return click.option("--deterministic", is_flag=True, expose_value=False,
                        callback=_enable_deterministic,
                        help="Deterministic CUDA kernels wherever torch has one (slower); an "
                             "op without one warns. The CPU kernels already are.")(f)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=None, separators=(",", ":")))
