"""`automtl inspect`: a readable summary of a prototxt, an artifact or a search log, or the
list of built-in backbones; it writes nothing but the PNG `--plot` asks for."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from automtl_cli.cli.compile_cmd import frontend_config
from automtl_cli.cli.options import emit_json, frontend_options
from automtl_cli.errors import BadInput, MissingInput

if TYPE_CHECKING:
    from automtl_cli.artifacts import SearchCheckpoint

log = logging.getLogger("automtl_cli.cli")


def _shape(s) -> str:
    if s and isinstance(s[0], list):
        return " ".join(_shape(x) for x in s)
    return "x".join(str(d) for d in s)


def _echo_columns(headers: tuple[str, ...], body: list[tuple[str, ...]],
                  right: set[int]) -> None:
    """A plain-text table; columns in `right` are right-aligned (numbers)."""
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:{'>' if i in right else '<'}{w}}}" for i, w in enumerate(widths))
    click.echo(fmt.format(*headers).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for b in body:
        click.echo(fmt.format(*b).rstrip())


def _print_table(rows: list[dict], total: int) -> None:
    body = [(r["name"], r["type"], _shape(r["output_shape"]), f"{r['params']:,}",
             f"d{r['depth']}" if r["searchable"] else "") for r in rows]
    _echo_columns(("layer", "type", "output", "params", "search"), body, {3})
    click.echo(f"total learnable parameters: {total:,}")


def _print_search_nodes(space: dict) -> None:
    tasks = space["tasks"]
    click.echo(f"search nodes for {len(tasks)} tasks ({', '.join(tasks)}), --bn {space['bn']}, "
               f"--skip {space['skip']}; branches per task: shared | specific | skip")
    body = [(n["name"], str(n["depth"]), _shape(n["output_shape"]), f"{n['shared']:,}",
             f"{n['specific']:,}", f"{n['skip_kind']} {n['skip']:,}")
            for n in space["search_nodes"]]
    _echo_columns(("node", "depth", "output", "shared", "specific", "skip"), body, {1, 3, 4})
    p = space["params"]
    click.echo("parameters: " + ", ".join(f"{k} {v:,}" for k, v in p.items()))


def _inspect_search(path: str, data: SearchCheckpoint, as_json: bool, plot: str | None) -> None:
    import torch

    from automtl_cli.engine.derive import search_logits
    from automtl_cli.engine.search import policy_table

    tasks = data.space.tasks
    names = list(data.search_nodes)
    logits = search_logits(data, names, tuple(tasks), path) if names else \
        torch.zeros(0, len(tasks), 3)
    table = policy_table(logits, names, tuple(tasks))
    if plot:
        from automtl_cli.plots import plot_policy

        plot_policy(torch.softmax(logits.float(), -1).numpy(), names, tasks, plot,
                    title=f"searched policy at step {data.step} (τ {data.tau:.3f}): "
                          "P(branch) per node and task; outlined = chosen")
    if as_json:
        emit_json({"kind": data.KIND.value, "step": data.step, "tau": data.tau,
                   "stage": data.stage, "complete": data.complete, "policy": table,
                   **({"plot": plot} if plot else {})})
        return
    click.echo(f"{path}: search checkpoint at step {data.step} ({data.stage}), "
               f"τ {data.tau:.4f}{'' if not data.complete else ', complete'}")
    click.echo("probabilities of shared / specific / skip per node and task (* the most likely)")
    width = max([4, *(len(n) for n in names)])
    click.echo(f"{'node':<{width}}  " + "  ".join(f"{t:^17}" for t in tasks))
    for row in table:
        cells = []
        for t in tasks:
            p = row[t]
            best = max(range(3), key=lambda k: p[k])
            cells.append(" ".join(f"{v:.2f}" + ("*" if k == best else " ")
                                  for k, v in enumerate(p)))
        click.echo(f"{row['node']:<{width}}  " + "  ".join(cells))
    if plot:
        click.echo(f"wrote {plot}")


def _read_log(path: str) -> list[dict[str, Any]]:
    """The records of a search's log.jsonl; a broken line is exit 65 naming its line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingInput(f"{path}: no such file") from None
    except OSError as e:
        raise MissingInput(f"{path}: cannot read ({e.strerror})") from None
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"{path}:{number}: not a JSON line ({e.msg})") from None
        if not isinstance(record, dict) or "step" not in record or "loss" not in record:
            raise BadInput(f"{path}:{number}: not a log line of automtl search or finetune "
                           "(no step and loss)")
        records.append(record)
    if not records:
        raise BadInput(f"{path}: the log is empty")
    return records


def _inspect_log(path: str, as_json: bool, plot: str | None) -> None:
    records = _read_log(path)
    if plot:
        from automtl_cli.plots import plot_search_log

        plot_search_log(records, plot)
    last = records[-1]
    if as_json:
        emit_json({"kind": "log", "lines": len(records), "last": last,
                   **({"plot": plot} if plot else {})})
        return
    losses = ", ".join(f"{t} {v:.4g}" for t, v in last["loss"].items())
    click.echo(f"{path}: {len(records)} lines up to step {last['step']} ({last.get('stage')}); "
               f"last losses {losses}")
    if "tau" in last:
        click.echo(f"  τ {last['tau']:.4f}, {last['sharing']:.0%} of choices shared, entropy "
                   f"{last['entropy']:.3f}, decided {last.get('decided', float('nan')):.2f}")
    if plot:
        click.echo(f"wrote {plot}")


def _list_backbones(as_json: bool) -> None:
    """The bundled backbones, each compiled: what `automtl compile NAME` would build."""
    from automtl_cli.bundled import backbone_names, bundled_backbone
    from automtl_cli.stages.compile import compile_backbone

    rows = []
    for name in backbone_names():
        s = compile_backbone(bundled_backbone(name)).summary()
        rows.append({"name": name, "input": next(iter(s["inputs"].values())),
                     "output": s["output_shape"], "params": s["params"],
                     "searchable": s["searchable"], "max_depth": s["max_depth"],
                     "path": s["file"]})
    if as_json:
        emit_json({"backbones": rows})
        return
    body = [(r["name"], _shape(r["input"]), _shape(r["output"]), f"{r['params']:,}",
             str(r["searchable"])) for r in rows]
    _echo_columns(("backbone", "input", "feature map", "params", "searchable convs"), body,
                  {3, 4})
    click.echo("built in: `automtl compile NAME` (or NAME.prototxt where no such file exists)")


@click.command("inspect")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--list", "list_backbones", is_flag=True,
              help="List the built-in backbones (parameters, searchable convolutions).")
@frontend_options
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Draw a PNG (matplotlib): for a search checkpoint the policy, for a "
                   "log.jsonl the losses, τ, sharing and entropy over steps.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def inspect(path, list_backbones, dialect, input_shapes, feature_blob, lenient, plot, as_json):
    """Print the per-layer table of a prototxt, the summary of an artifact (supermodel.pt,
    a search checkpoint) or of a search log (log.jsonl), or list the built-in backbones.

    PATH may name a built-in backbone (resnet34, mobilenetv2, ...; see --list).
    """
    if list_backbones:
        if path:
            raise click.UsageError("give PATH or --list, not both")
        _list_backbones(as_json)
        return
    if not path:
        raise click.UsageError("give a PATH (prototxt, .pt artifact, log.jsonl) or --list")
    if plot and Path(path).suffix not in (".pt", ".jsonl"):
        raise click.UsageError("--plot draws a search checkpoint (.pt) or a log.jsonl")
    if Path(path).suffix == ".jsonl":
        _inspect_log(path, as_json, plot)
        return
    from automtl_cli.artifacts import SearchCheckpoint, SupermodelArtifact, load
    from automtl_cli.compiler.space import SearchSpace, space_summary
    from automtl_cli.stages.compile import compile_backbone, layer_table

    if Path(path).suffix == ".pt":
        data = load(path, (SearchCheckpoint, SupermodelArtifact))
        if isinstance(data, SearchCheckpoint):
            _inspect_search(path, data, as_json, plot)
            return
        graph = data.graph
        rows = layer_table(graph)
        space = None
        if data.tasks:
            space = space_summary(graph, SearchSpace(data.tasks, data.bn, data.skip))
        if as_json:
            emit_json({"kind": data.KIND.value, "file": data.source["path"],
                       "sha256": data.source["sha256"], "dialect": data.dialect,
                       "params": graph.params, "layers": rows, "supermodel": space})
            return
        click.echo(f"{path}: {data.KIND.value} (format {data.FORMAT}) from "
                   f"{data.source['path']} [{data.dialect}], seed {data.seed}")
        if space is None:
            _print_table(rows, graph.params)
            click.echo("no tasks yet: `automtl search --tasks ...` (or compile --tasks) sets them")
            return
        _print_search_nodes(space)
        return
    result = compile_backbone(path, frontend_config(dialect, input_shapes, feature_blob,
                                                    lenient), warn=log.warning)
    for note in result.front.notes:
        log.info("note: %s", note)
    rows = layer_table(result.graph)
    if as_json:
        emit_json({**result.summary(), "layer_table": rows})
        return
    click.echo(f"{path} ({result.front.dialect.name} dialect: {result.front.dialect.reason})")
    _print_table(rows, result.graph.params)
