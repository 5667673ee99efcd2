#!/usr/bin/env python
"""Benchmark of the supermodel, every figure measured side by side in one run.

For each backbone (Deeplab-ResNet34 at full width, ResNet-34 at width 16; 64×64 input, batch 8
per task, T = 3 by default) it reports:

* `compile_ms`: front end + search-space accounting, in process (median of runs);
* `search_step_speedup`: one soft search step (forward and backward), the fused all-task pass
  against the per-task reference pass (one task at a time, every branch computed), timed
  alternately so that machine noise hits both;
* `max_rel_diff`: the largest relative difference between the two, over the features of every
  task and the gradient of every parameter;
* `gflops` and `efficiency`: the fused step's achieved GFLOP/s (FLOPs counted by
  torch.utils.flop_counter) against a dense float32 matmul on the same machine.

Usage: python scripts/bench.py [--quick] [--json] [--device cpu|cuda] [--tasks 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from automtl_cli.compiler.space import SearchSpace, space_summary  # noqa: E402
from automtl_cli.compiler.supermodel import build_supermodel, gumbel_noise  # noqa: E402
from automtl_cli.frontend.build import CompileOptions, build_graph  # noqa: E402

BACKBONES = {"deeplab_resnet34": "specs/resnet34.prototxt",
             "resnet34_w16": "specs/resnet34_w16.prototxt"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, repeats: int) -> float:
    n = 2048 if device.type == "cpu" else 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n ** 3 / min(times) / 1e9


def compile_ms(path: Path, tasks: tuple[str, ...], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        g = build_graph(path).graph
        space_summary(g, SearchSpace(tasks))
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_backbone(name: str, path: Path, args, device: torch.device) -> dict:
    tasks = tuple(f"task{i}" for i in range(args.tasks))
    b, hw = args.batch, args.size
    result = {"backbone": name, "tasks": len(tasks), "batch_per_task": b, "input": hw,
              "compile_ms": round(compile_ms(path, tasks, args.repeats * 2), 2)}
    graph = build_graph(path, CompileOptions(input_shapes={None: (b, 3, hw, hw)})).graph
    model = build_supermodel(graph, SearchSpace(tasks), seed=0).to(device)
    s = len(graph.searchable)
    x = torch.randn(len(tasks), b, 3, hw, hw, device=device)
    noise = gumbel_noise((s, len(tasks), 3), seed=0, step=0).to(device)
    result["supermodel_params"] = sum(p.numel() for p in model.parameters())

    def fused_step() -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        y = model(x, "soft", noise=noise, tau=5.0)
        feats = [y[:, t] for t in range(len(tasks))]
        sum(f.square().mean() for f in feats).backward()
        return feats, {k: p.grad for k, p in model.named_parameters()}

    def reference_step() -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        feats = model.forward_reference(x, "soft", noise=noise, tau=5.0)
        sum(f.square().mean() for f in feats).backward()
        return feats, {k: p.grad for k, p in model.named_parameters()}

    # Agreement: the two passes on the same weights, inputs and noise.
    fa, ga = fused_step()
    fa = [f.detach().clone() for f in fa]
    ga = {k: g.clone() for k, g in ga.items() if g is not None}
    fb, gb = reference_step()
    diffs = [((u - v).norm() / v.norm().clamp_min(1e-12)).item() for u, v in zip(fa, fb)]
    scale = torch.cat([g.flatten() for g in gb.values() if g is not None]).norm().item()
    for k, g in ga.items():
        ref = gb[k]
        diffs.append(((g - ref).norm() / (ref.norm() + 1e-3 * scale)).item())
    result["max_rel_diff"] = max(diffs)

    fused_times, ref_times = [], []
    for i in range(args.warmup + args.repeats):
        for step, times in ((fused_step, fused_times), (reference_step, ref_times)):
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    fused, ref = statistics.median(fused_times), statistics.median(ref_times)
    result.update(fused_step_s=round(fused, 4), reference_step_s=round(ref, 4),
                  search_step_speedup=round(ref / fused, 3))

    counter = FlopCounterMode(display=False)
    with counter:
        fused_step()
    flops = counter.get_total_flops()
    result["step_gflop"] = round(flops / 1e9, 3)
    result["gflops"] = round(flops / fused / 1e9, 2)
    return result


def table(rows: list[dict], matmul: float) -> str:
    cols = ["backbone", "tasks", "compile_ms", "fused_step_s", "reference_step_s",
            "search_step_speedup", "max_rel_diff", "gflops", "efficiency"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:.2e}" if c == "max_rel_diff" else str(r[c]) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\ndense float32 matmul: {matmul:.1f} GFLOP/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CI-sized)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="batch per task")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice, the core count)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.repeats, args.warmup = (2, 1) if args.quick else (5, 2)
    device = torch.device(args.device)
    matmul = matmul_gflops(device, args.repeats + 2)
    rows = []
    for name in args.backbones.split(","):
        row = bench_backbone(name, ROOT / BACKBONES[name], args, device)
        row["efficiency"] = round(row["gflops"] / matmul, 3)
        rows.append(row)
        print(f"{name}: done", file=sys.stderr)
    out = {"device": str(device), "threads": torch.get_num_threads(),
           "matmul_gflops": round(matmul, 2), "results": rows}
    if not args.json:
        print(table(rows, matmul))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
