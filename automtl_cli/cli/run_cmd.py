"""`automtl run`: the whole chain and its baselines, ending with one table."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from automtl_cli.choices import BnMode, Budget, DeriveMode, Init, SkipMode
from automtl_cli.cli.options import (
    choice_of,
    deterministic_option,
    emit_json,
    max_params_option,
    precision_option,
    resolve_device,
)

log = logging.getLogger("automtl_cli.cli")


@click.command("run")
@click.argument("backbone", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", "run_dir", type=click.Path(file_okay=False),
              help="Run directory (default runs/BACKBONE-NAME).")
@click.option("--tasks", help="Tasks (default: the experiment's; synthetic nyu3).")
@click.option("--data", help="synthetic (default), nyuv2:DIR, cityscapes:DIR, taskonomy:DIR.")
@click.option("--experiment", "experiment_path", type=click.Path(dir_okay=False))
@click.option("--bn", type=choice_of(BnMode), default=BnMode.TASK.value,
              show_default=True)
@click.option("--skip", type=choice_of(SkipMode),
              default=SkipMode.REFERENCE.value, show_default=True)
@click.option("--random", "random_plans", type=int, default=0, show_default=True,
              help="Also fine-tune K random plans (the paper's ablation).")
@click.option("--derive", "derive_mode",
              type=choice_of(DeriveMode, DeriveMode.ARGMAX, DeriveMode.SAMPLE),
              default="argmax", show_default=True,
              help="AutoMTL's plan: the most likely branch of the searched policy, or "
                   "--samples draws from it (the paper's way), the best on val kept.")
@click.option("--samples", type=int, default=1, show_default=True,
              help="With --derive sample: candidates drawn; the best on val is kept.")
@max_params_option
@click.option("--init", type=choice_of(Init), default="search", show_default=True,
              help="AutoMTL's fine-tuning starts from the searched weights, from the seed "
                   "(the paper's retraining), or from the backbone's pretrained weights.")
@click.option("--weights", type=click.Path(dir_okay=False), metavar="FILE",
              help="Pretrained backbone weights (.caffemodel; a state dict for a PyTorch "
                   "module): the search and every baseline start from them.")
@click.option("--feature-blob", "--feature", "feature_blob", metavar="NAME",
              help="Cut the backbone here (a blob, or a module path of a PyTorch module).")
@click.option("--budget", type=choice_of(Budget), default="equal", show_default=True,
              help="equal: every baseline gets as many weight updates as AutoMTL's search and "
                   "fine-tuning together; finetune: the fine-tuning iterations alone.")
@click.option("--search-iters", type=int, help="Policy-search iterations.")
@click.option("--warmup-iters", type=int)
@click.option("--finetune-iters", type=int,
              help="AutoMTL's fine-tuning iterations (the baselines': see --budget).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True)
@click.option("--jobs", type=click.IntRange(min=1),
              help="Methods trained side by side, in worker processes that share the cores "
                   "(default: 2 on a CPU with two cores or more, else 1; 1 runs them one "
                   "after the other).")
@deterministic_option
@click.option("--device", default="auto", show_default=True)
@precision_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def run(ctx, backbone, run_dir, tasks, data, experiment_path, bn, skip, random_plans,
        derive_mode, samples, max_params, init, weights, feature_blob, budget, search_iters,
        warmup_iters, finetune_iters, seed, workers, jobs, device, precision, as_json):
    """Compile, search, derive and fine-tune, with the baselines; print the results table.

    With no arguments: the built-in synthetic scenes (seg, depth, normal) on a small ResNet.
    BACKBONE is a prototxt or a PyTorch module (FILE.py:NAME, package.module:NAME), traced at
    the data's image size.
    """
    from automtl_cli.experiment import build_stage_experiment
    from automtl_cli.stages.jobs import auto_jobs
    from automtl_cli.stages.run import default_backbone, run_configs, run_pipeline

    backbone = Path(backbone) if backbone else default_backbone()
    run_dir = Path(run_dir) if run_dir else Path("runs") / backbone.stem
    experiment = build_stage_experiment(experiment_path, tasks, data)
    device = resolve_device(device)
    search, finetune = run_configs(experiment, search_iters=search_iters,
                                   warmup_iters=warmup_iters, finetune_iters=finetune_iters,
                                   init=init, seed=seed, num_workers=workers,
                                   device=device, precision=precision)
    result = run_pipeline(backbone, run_dir, experiment, search=search, finetune=finetune,
                          random_plans=random_plans, samples=samples,
                          derive_mode=derive_mode, max_params=max_params, budget=budget,
                          bn=bn, skip=skip, weights=weights, feature=feature_blob,
                          jobs=jobs or auto_jobs(device), say=lambda s: log.info("%s", s),
                          show_progress=not ctx.obj["quiet"])
    if as_json:
        emit_json(result)
        return
    click.echo(result["table"])
    drawn = f", {result['picture']}" if result["picture"] else ""
    click.echo(f"\n(test split; Δ_T against the single-task networks; {run_dir}/results.md"
               f"{drawn})")
