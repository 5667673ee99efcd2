"""`automtl export`."""

from __future__ import annotations

from pathlib import Path

import click

from automtl_cli.choices import ExportFormat
from automtl_cli.cli.options import choice_of, emit_json
from automtl_cli.errors import BadInput


@click.command("export")
@click.argument("run_dir", default=".", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=choice_of(ExportFormat), default="onnx",
              show_default=True, help="ONNX (checked with onnxruntime; needs the export extra) "
                                      "or TorchScript (checked with torch.jit.load).")
@click.option("-o", "--output", type=click.Path(),
              help="Output file (default RUN/export/model.onnx or RUN/export/model.ts).")
@click.option("--from", "model", type=click.Path(dir_okay=False),
              help="Export this final.pt or derived model.pt instead of RUN's (RUN/final.pt "
                   "when present, else RUN/derived/model.pt).")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True,
              help="Largest accepted difference from the PyTorch model (scaled by the outputs' "
                   "magnitude where it exceeds 1).")
@click.option("--runs", type=int, default=20, show_default=True,
              help="Timed runs per latency figure (median, after a warm-up).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export(run_dir, fmt, output, model, opset, tolerance, runs, as_json):
    """Export RUN's model as one graph (an output per task), checked against PyTorch.

    BatchNorm is folded into the convolution before it; shared prefixes stay computed once.
    Exit 69 when onnx/onnxruntime are missing, 66 without a derived model, 73 when the output
    cannot be written.
    """
    from automtl_cli.stages.export import ExportConfig
    from automtl_cli.stages.export import export as export_stage

    try:
        config = ExportConfig(format=fmt, output=Path(output) if output else None,
                              model=Path(model) if model else None, opset=opset,
                              tolerance=tolerance, runs=runs)
    except ValueError as e:
        raise BadInput(str(e)) from e
    result = export_stage(run_dir, config)
    if as_json:
        emit_json(result)
        return
    v, folded = result["verification"], result["folded"]
    what = {"final": "the fine-tuned model", "derived": "the derived model (not fine-tuned)",
            "given": "the given model"}[result["source"]["kind"]]
    click.echo(f"exported {what} {result['source']['path']} to {result['output']} "
               f"({fmt}; outputs {', '.join(result['tasks'])}; dynamic batch)")
    left = folded["batchnorm_left"]
    click.echo(f"  {result['convolutions']} convolutions; folded {folded['batchnorm']} BatchNorm "
               f"and {folded['skip_branches']} skip-branch BatchNorm into convolutions"
               + (f"; {left} BatchNorm kept (not directly and solely after a convolution)"
                  if left else ""))
    click.echo(f"  largest difference from PyTorch ({result['runtime']}, batches "
               f"{' and '.join(map(str, v['batch_sizes']))}): {v['max_abs_diff']:.2e}")
    for batch, t in result["latency_ms"].items():
        click.echo(f"  latency {batch.replace('_', ' ')}: PyTorch {t['pytorch_ms']:.2f} ms, "
                   f"exported {t['exported_ms']:.2f} ms")
