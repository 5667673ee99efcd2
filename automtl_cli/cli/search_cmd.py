"""`automtl search`."""

from __future__ import annotations

import logging

import click

from automtl_cli.choices import Estimator, Regularizer, StepMode
from automtl_cli.cli.options import (
    choice_of,
    deterministic_option,
    emit_json,
    precision_option,
    resolve_device,
)

log = logging.getLogger("automtl_cli.cli")


@click.command("search")
@click.argument("run_dir", default=".", type=click.Path(file_okay=False))
@click.option("--tasks", help="Tasks: a comma list (seg,depth,normal) or a set (nyu3, "
                              "taskonomy5). Default: the compile's or the experiment's.")
@click.option("--data", help="synthetic (default), nyuv2:DIR, cityscapes:DIR or taskonomy:DIR.")
@click.option("--experiment", "experiment_path", type=click.Path(dir_okay=False),
              help="An experiment prototxt (tasks, data); flags override its fields.")
@click.option("--iters", type=int, help="Policy-search iterations after the warm-up.")
@click.option("--warmup-iters", type=int, help="Warm-up iterations (all branches averaged).")
@click.option("--policy-steps", type=int, help="Policy steps per cycle (p).")
@click.option("--weight-steps", type=int, help="Weight steps per cycle (q).")
@click.option("--tau", type=float, help="Initial Gumbel-softmax temperature (5).")
@click.option("--tau-decay", type=float, help="τ multiplier (0.965).")
@click.option("--tau-every", type=int, help="Policy steps between τ decays (101).")
@click.option("--reg", type=choice_of(Regularizer),
              help="Sharing regulariser: AutoMTL's, or expected parameters.")
@click.option("--reg-weight", type=float, help="λ_policy, the regulariser's weight.")
@click.option("--reg-target", type=float,
              help="With --reg params: penalise only the size above this fraction of T "
                   "single-task networks.")
@click.option("--warmup-lr", type=float, help="Adam learning rate of the warm-up.")
@click.option("--policy-lr", type=float, help="Adam learning rate of the logits (0.01).")
@click.option("--weight-lr", type=float, help="SGD learning rate of the weight steps.")
@click.option("--step", "step_mode", type=choice_of(StepMode),
              help="sum: one step on the summed task losses (default); per-task: the "
                   "reference's one step per task.")
@click.option("--estimator", type=choice_of(Estimator),
              help="soft: the Gumbel-softmax mixture of every branch (the reference); gdas: "
                   "only the sampled branch runs, with a straight-through gradient.")
@click.option("--seed", type=int, help="Default: the seed given to compile.")
@click.option("--batch-size", type=int, help="Batch size (default: the experiment's).")
@click.option("--checkpoint-every", type=int, help="Steps between checkpoints.")
@click.option("--log-every", type=int, help="Steps between log lines.")
@click.option("--keep", type=int, help="Checkpoints kept (3).")
@click.option("--workers", type=int, default=0, show_default=True,
              help="Data worker processes.")
@deterministic_option
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@precision_option
@click.option("--resume", is_flag=True, help="Continue from RUN/search/last.pt.")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON.")
@click.pass_context
def search(ctx, run_dir, tasks, data, experiment_path, iters, warmup_iters, policy_steps,
           weight_steps, tau, tau_decay, tau_every, reg, reg_weight, reg_target, warmup_lr,
           policy_lr, weight_lr, step_mode, estimator, seed, batch_size, checkpoint_every,
           log_every, keep,
           workers, device, precision, resume, as_json):
    """Search the sharing policy of RUN/supermodel.pt: warm-up, then policy/weight cycles."""
    from automtl_cli.engine.distributed import init_distributed
    from automtl_cli.engine.runconfig import read_supermodel
    from automtl_cli.stages.search import search as search_stage
    from automtl_cli.stages.search import search_config_for, search_experiment

    compiled = read_supermodel(run_dir)  # read once: tasks, seed, graph
    experiment = search_experiment(compiled, experiment_path, tasks, data)
    dist, dev = init_distributed(resolve_device(device))
    config = search_config_for(
        experiment, compiled, iters=iters, warmup_iters=warmup_iters,
        policy_steps=policy_steps, weight_steps=weight_steps, tau=tau, tau_decay=tau_decay,
        tau_every=tau_every, reg=reg, reg_weight=reg_weight, reg_target=reg_target,
        warmup_lr=warmup_lr, policy_lr=policy_lr, weight_lr=weight_lr, step=step_mode,
        estimator=estimator, seed=seed, batch_size=batch_size,
        checkpoint_every=checkpoint_every, log_every=log_every, keep=keep, num_workers=workers,
        device=dev, precision=precision)
    summary = search_stage(run_dir, config, experiment, supermodel=compiled, resume=resume,
                           show_progress=not ctx.obj["quiet"], dist=dist)
    if not dist.is_main:
        return
    if as_json:
        emit_json(summary)
        return
    click.echo(f"searched {summary['steps']} steps in {summary['seconds']} s: τ "
               f"{summary['tau']:.3f}, {summary['sharing']:.0%} of (node, task) choices shared")
    click.echo(f"  checkpoint {summary['checkpoint']}; `automtl inspect {summary['checkpoint']}` "
               "shows the policy")
