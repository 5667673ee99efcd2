"""`automtl derive`."""

from __future__ import annotations

import click

from automtl_cli.choices import DeriveMode
from automtl_cli.cli.options import choice_of, emit_json, max_params_option


@click.command("derive")
@click.argument("run_dir", default=".", type=click.Path(file_okay=False))
@click.option("--mode", type=choice_of(DeriveMode, DeriveMode.SAMPLE, DeriveMode.ARGMAX),
              default="sample", show_default=True,
              help="From the search's logits: one seeded draw per node and task (the "
                   "reference's way), or the most likely branch.")
@click.option("--plan", "plan", metavar="shared|specific|FILE",
              help="A fixed plan instead: hard sharing, one network per task, or a plan.json "
                   "edited by hand.")
@click.option("--samples", type=int, default=1, show_default=True,
              help="Write K sampled candidates (RUN/derived/candidates/k/).")
@click.option("--seed", type=int, help="Sampling seed (default: the run's).")
@max_params_option
@click.option("--tasks", help="For a plan straight after compile: the tasks.")
@click.option("--data", help="For a plan straight after compile: the data.")
@click.option("--experiment", "experiment_path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def derive(run_dir, mode, plan, samples, seed, max_params, tasks, data, experiment_path,
           as_json):
    """Derive a compact multi-task network from the search (or a fixed plan)."""
    from automtl_cli.stages.derive import derive as derive_stage
    from automtl_cli.stages.derive import derive_experiment, plan_mode

    mode, plan_file = plan_mode(mode, plan)
    result = derive_stage(run_dir, mode=mode, plan_file=plan_file, samples=samples, seed=seed,
                          experiment=derive_experiment(run_dir, experiment_path, tasks, data),
                          max_params=max_params)
    if as_json:
        emit_json(result)
        return
    for c in result["candidates"]:
        click.echo(f"derived ({result['mode']}) into {c['dir']}: {c['params']:,} parameters, "
                   f"{c['flops'] / 1e9:.3f} GFLOP per image for all tasks, "
                   f"{c['fraction_shared']:.0%} of choices shared")
