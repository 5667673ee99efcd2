"""`automtl derive`."""

from __future__ import annotations

import click

from automtl_cli.cli.options import emit_json
from automtl_cli.engine.derive import run_derive
from automtl_cli.errors import BadInput
from automtl_cli.experiment import build_stage_experiment


@click.command("derive")
@click.argument("run_dir", default=".", type=click.Path(file_okay=False))
@click.option("--mode", type=click.Choice(["sample", "argmax"]), default="sample",
              show_default=True,
              help="From the search's logits: one seeded draw per node and task (the "
                   "reference's way), or the most likely branch.")
@click.option("--plan", "plan", metavar="shared|specific|FILE",
              help="A fixed plan instead: hard sharing, one network per task, or a plan.json "
                   "edited by hand.")
@click.option("--samples", type=int, default=1, show_default=True,
              help="Write K sampled candidates (RUN/derived/candidates/k/).")
@click.option("--seed", type=int, help="Sampling seed (default: the run's).")
@click.option("--tasks", help="For a plan straight after compile: the tasks.")
@click.option("--data", help="For a plan straight after compile: the data.")
@click.option("--experiment", "experiment_path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def derive(run_dir, mode, plan, samples, seed, tasks, data, experiment_path, as_json):
    """Derive a compact multi-task network from the search (or a fixed plan)."""
    from automtl_cli.compiler import load_supermodel

    plan_file = None
    if plan in ("shared", "specific"):
        mode = plan
    elif plan:
        mode, plan_file = "file", plan
    if samples < 1:
        raise BadInput("--samples must be at least 1")
    experiment = None
    if tasks or data or experiment_path:
        experiment = build_stage_experiment(experiment_path, tasks, data)
    else:
        compiled = load_supermodel(f"{run_dir}/supermodel.pt")
        if compiled.get("tasks"):
            experiment = build_stage_experiment(None, ",".join(compiled["tasks"]), None)
    result = run_derive(run_dir, mode=mode, plan_file=plan_file, samples=samples, seed=seed,
                        experiment=experiment)
    if as_json:
        emit_json(result)
        return
    for c in result["candidates"]:
        click.echo(f"derived ({result['mode']}) into {c['dir']}: {c['params']:,} parameters, "
                   f"{c['flops'] / 1e9:.3f} GFLOP per image for all tasks, "
                   f"{c['fraction_shared']:.0%} of choices shared")
