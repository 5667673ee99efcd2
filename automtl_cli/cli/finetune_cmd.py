"""`automtl finetune` and `automtl eval`."""

from __future__ import annotations

import click

from automtl_cli.choices import Init, MetricVariant, Precision
from automtl_cli.cli.options import (
    choice_of,
    deterministic_option,
    emit_json,
    precision_option,
    resolve_device,
)


def _metrics_table(metrics: dict) -> list[str]:
    lines = []
    for task, values in metrics.items():
        shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if k != "loss")
        lines.append(f"    {task}: {shown}")
    return lines


@click.command("finetune")
@click.argument("run_dir", default=".", type=click.Path(file_okay=False))
@click.option("--init", type=choice_of(Init), default="scratch",
              show_default=True,
              help="Start from the seed's weights (the paper's runs), the searched ones, or "
                   "the backbone's pretrained weights (compile --weights).")
@click.option("--iters", type=int, help="Iterations (reference 30000; synthetic 400).")
@click.option("--lr", type=float, help="Adam learning rate (1e-3).")
@click.option("--lr-step", type=int, help="Halve the learning rate every N iterations.")
@click.option("--candidate-iters", type=int,
              help="With sampled candidates: iterations each gets before the best on val is "
                   "kept (default iters/5).")
@click.option("--metrics", type=choice_of(MetricVariant), default="correct",
              show_default=True, help="Metric variant (reference: the reference's quirks).")
@click.option("--stl", "stl_path", type=click.Path(dir_okay=False),
              help="A single-task run's metrics.json, for Δ_T.")
@click.option("--seed", type=int, help="Data-order seed (default: the run's).")
@click.option("--batch-size", type=int)
@click.option("--checkpoint-every", type=int)
@click.option("--log-every", type=int)
@click.option("--keep", type=int)
@click.option("--workers", type=int, default=0, show_default=True)
@deterministic_option
@click.option("--device", default="auto", show_default=True)
@precision_option
@click.option("--sync-bn", is_flag=True,
              help="Under torchrun: BatchNorm statistics over the global batch.")
@click.option("--resume", is_flag=True, help="Continue from RUN/finetune/last.pt.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def finetune(ctx, run_dir, init, iters, lr, lr_step, candidate_iters, metrics, stl_path, seed,
             batch_size, checkpoint_every, log_every, keep, workers, device, precision, sync_bn,
             resume,
             as_json):
    """Train the derived network of RUN; write RUN/final.pt and RUN/metrics.json."""
    from automtl_cli.engine.distributed import init_distributed
    from automtl_cli.stages.finetune import finetune as finetune_stage
    from automtl_cli.stages.finetune import finetune_config_for, read_metrics

    stl = read_metrics(stl_path) if stl_path else None
    dist, dev = init_distributed(resolve_device(device))
    config = finetune_config_for(
        run_dir, iters=iters, lr=lr, lr_step=lr_step, init=init, batch_size=batch_size,
        checkpoint_every=checkpoint_every, log_every=log_every, keep=keep, seed=seed,
        num_workers=workers, device=dev, metrics=metrics, sync_bn=sync_bn, precision=precision)
    result = finetune_stage(run_dir, config, resume=resume, candidate_iters=candidate_iters,
                          show_progress=not ctx.obj["quiet"], stl_metrics=stl, dist=dist)
    if not dist.is_main:
        return
    if as_json:
        emit_json(result)
        return
    click.echo(f"fine-tuned {result['steps']} steps ({init} init); {result['final']}")
    for split in ("val", "test"):
        click.echo(f"  {split}:")
        for line in _metrics_table(result["metrics"][split]):
            click.echo(line)
    if "delta" in result:
        click.echo(f"  Δ_T vs single-task (test): {result['delta']['test']['mean']:+.2f}%")


@click.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", help="Override the data: synthetic, nyuv2:DIR, cityscapes:DIR, "
                             "taskonomy:DIR.")
@click.option("--split", type=click.Choice(["val", "test"]), default="test", show_default=True)
@click.option("--metrics", type=choice_of(MetricVariant), default="correct",
              show_default=True)
@click.option("--batch-size", type=int)
@click.option("--workers", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@precision_option
def eval_(checkpoint, data, split, metrics, batch_size, workers, device, precision):
    """Metrics of a final (or derived) model on a split, as JSON on stdout."""
    from automtl_cli.engine.distributed import init_distributed
    from automtl_cli.stages.evaluate import evaluate_model

    dist, dev = init_distributed(resolve_device(device))
    result = evaluate_model(checkpoint, split, data=data, variant=metrics,
                            batch_size=batch_size, num_workers=workers, device=dev, dist=dist,
                            precision=precision or Precision.FP32.value)
    if not dist.is_main:
        return
    emit_json({"checkpoint": checkpoint, "split": split, "metric_variant": metrics,
               "metrics": result})
