"""`automtl data ...`: look at datasets (`preview`)."""

from __future__ import annotations

import logging

import click

from automtl_cli.cli.options import emit_json
from automtl_cli.experiment import SPLITS, build_preview_experiment

log = logging.getLogger("automtl_cli.cli")


@click.group("data")
def data() -> None:
    """Look at the datasets: the built-in synthetic scenes, NYUv2, CityScapes, Taskonomy."""


@data.command("preview")
@click.option("--data", "data_arg", metavar="SOURCE",
              help="synthetic, nyuv2:DIR, cityscapes:DIR or taskonomy:DIR "
                   "(default: the experiment's).")
@click.option("--experiment", "experiment_path", type=click.Path(dir_okay=False),
              help="Experiment prototxt (default: the built-in synthetic one).")
@click.option("--tasks", help="nyu3, taskonomy5, or a comma list such as seg,depth "
                              "(default: the experiment's; every label for the default).")
@click.option("--split", type=click.Choice(SPLITS), default="val", show_default=True)
@click.option("-n", "--samples", type=click.IntRange(1, 64), default=4, show_default=True,
              help="How many samples (rows).")
@click.option("--seed", type=int, help="Synthetic: the scene seed. Real data: pick random "
                                       "samples with this seed instead of the first ones.")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Where generated scenes are kept (default $AUTOMTL_CACHE or "
                   "~/.cache/automtl).")
@click.option("-o", "--output", default="preview.png", show_default=True,
              type=click.Path(dir_okay=False), help="PNG file to write.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def preview(data_arg, experiment_path, tasks, split, samples, seed, cache_dir, output, as_json):
    """Draw a grid of samples with each task's label beside the image."""
    from automtl_cli.data.preview import preview_experiment

    experiment = build_preview_experiment(experiment_path, tasks=tasks, data=data_arg)
    summary = preview_experiment(experiment, output, split=split, samples=samples, seed=seed,
                                 cache_dir=cache_dir)
    if as_json:
        emit_json(summary)
        return
    click.echo(f"wrote {summary['path']}: {summary['samples']} {summary['data']} "
               f"{summary['split']} samples × image + {', '.join(summary['tasks'])}")
