"""`automtl compile`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

from automtl_cli.cli.options import emit_json, frontend_options, search_space_options

if TYPE_CHECKING:
    from automtl_cli.frontend.build import CompileOptions

log = logging.getLogger("automtl_cli.cli")


def frontend_config(dialect, input_shapes, feature_blob, lenient, weights=None
                    ) -> CompileOptions:
    from automtl_cli.frontend.build import CompileOptions

    return CompileOptions(dialect=dialect, input_shapes=dict(input_shapes),
                          feature_blob=feature_blob, lenient=lenient, weights=weights)


weights_option = click.option(
    "--weights", type=click.Path(dir_okay=False), metavar="FILE",
    help="Pretrained weights: a .caffemodel for a prototxt; a state dict (.pt/.pth, or "
         ".safetensors) for a PyTorch module. Search starts from them; `finetune --init "
         "pretrained` retrains from them.")


@click.command("compile")
@click.argument("backbone", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "run_dir", default=".", show_default=True,
              type=click.Path(file_okay=False), help="Run directory to write into.")
@frontend_options
@weights_option
@search_space_options
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed the weights are materialised from when a later stage first needs them "
                   "(the heads, and every layer --weights does not cover).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def compile_(backbone, run_dir, dialect, input_shapes, feature_blob, lenient, weights, tasks,
             bn, skip, seed, as_json):
    """Compile a backbone into RUN/supermodel.pt and RUN/compile.json.

    BACKBONE is a prototxt file, or a PyTorch module as FILE.py:NAME or package.module:NAME
    (NAME a Module subclass built with no arguments, a function returning a module, or a module
    object), which needs --input-shape N,C,H,W. With --tasks, the JSON summary also carries the
    supermodel's parameter breakdown. A PyTorch module's own weights (or --weights) are the
    initial weights of every branch; a prototxt starts from the seed unless --weights is given.
    """
    from automtl_cli.stages.compile import compile_backbone, compile_stage

    options = frontend_config(dialect, input_shapes, feature_blob, lenient, weights)
    result = compile_backbone(backbone, options, tasks=tasks or (), bn=bn, skip=skip, seed=seed,
                              warn=log.warning)
    for note in result.front.notes:
        log.info("note: %s", note)
    paths = compile_stage(result, run_dir)
    summary = result.summary()
    if as_json:
        emit_json({**summary, "files": paths})
        return
    inputs = ", ".join(f"{k} {v}" for k, v in summary["inputs"].items())
    click.echo(f"compiled {backbone} ({summary['dialect']} dialect: {summary['dialect_reason']}) "
               f"in {summary['compile_ms']:.1f} ms")
    click.echo(f"  input {inputs} -> feature {summary['feature_blob']} "
               f"{summary['output_shape']}")
    click.echo(f"  {summary['layers']} layers, {summary['params']:,} parameters, "
               f"{summary['searchable']} searchable convolutions (depth {summary['max_depth']})")
    click.echo(f"  initial weights: {summary['weights'] or f'from seed {seed}'}")
    if result.space_info is not None:
        p = result.space_info["params"]
        click.echo(f"  supermodel for {', '.join(result.space.tasks)} (--bn {bn}, --skip {skip}): "
                   f"{p['total']:,} parameters (shared conv {p['shared_conv']:,}, task conv "
                   f"{p['task_conv']:,}, skip {p['skip']:,}, BN {p['shared_bn'] + p['task_bn']:,}"
                   f", policy {p['policy']:,})")
    click.echo(f"  wrote {paths['supermodel']}, {paths['compile_json']}")
