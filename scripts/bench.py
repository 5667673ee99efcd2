#!/usr/bin/env python
"""Speed benchmark: every figure a ratio of two things measured side by side in one run.

For Deeplab-ResNet34 at full width and ResNet-34 at width 16 (64×64 input, batch 8 per task,
T = 3 and 5 by default) it reports:

* `compile_ms`: front end + search-space accounting, in process, for T = 2, 3, 5;
* `search_step_speedup`: one soft search step (forward and backward), the fused all-task pass
  against the per-task reference pass (one task at a time, every branch computed), timed
  alternately so that machine noise hits both; `max_rel_diff` is their largest relative
  difference over the features of every task and the gradient of every parameter;
* `gdas_speedup`: a GDAS step (only the sampled branch runs) against a soft step, and, on the
  synthetic scenes, one short search with each (same seed): sharing fraction and validation loss;
* `inference_speedup_task` / `_follow`: all-task inference of a derived model with about half of
  its convolutions shared (the first half), the tree against a per-task loop, under `--bn task`
  and `--bn follow`, with the FLOPs ratio the tree should achieve (`flops_ratio_*`);
* `peak_memory_mb`: the resident-set growth of one fused search step (CPU) or the peak allocated
  memory (GPU);
* `efficiency`: the fused step's achieved GFLOP/s (FLOPs counted by torch.utils.flop_counter)
  over a dense float32 matmul's on the same machine.

Usage: python scripts/bench.py [--quick] [--json] [--device cpu|cuda] [--tasks 3,5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from automtl_cli.compiler.derived import DerivedBackbone, Tree, build_tree  # noqa: E402
from automtl_cli.compiler.space import SearchSpace, space_summary  # noqa: E402
from automtl_cli.compiler.supermodel import build_supermodel, gumbel_noise  # noqa: E402
from automtl_cli.frontend.build import CompileOptions, build_graph  # noqa: E402

BACKBONES = {"deeplab_resnet34": "specs/resnet34.prototxt",
             "resnet34_w16": "specs/resnet34_w16.prototxt"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
          device: torch.device) -> dict[str, float]:
    """Median seconds of each function, the functions interleaved run by run."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def matmul_gflops(device: torch.device, repeats: int) -> float:
    n = 2048 if device.type == "cpu" else 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t = timed({"mm": lambda: a @ b}, repeats, 1, device)["mm"]
    return 2 * n ** 3 / t / 1e9


def compile_ms(path: Path, tasks: int, repeats: int) -> float:
    names = tuple(f"task{i}" for i in range(tasks))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        g = build_graph(path).graph
        space_summary(g, SearchSpace(names))
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 2)


def search_steps(path: Path, t: int, args, device: torch.device) -> dict:
    """Fused soft vs reference, GDAS vs soft, agreement, FLOP rate."""
    tasks = tuple(f"task{i}" for i in range(t))
    b, hw = args.batch, args.size
    graph = build_graph(path, CompileOptions(input_shapes={None: (b, 3, hw, hw)})).graph
    model = build_supermodel(graph, SearchSpace(tasks), seed=0).to(device)
    s = len(graph.searchable)
    x = torch.randn(t, b, 3, hw, hw, device=device)
    noise = gumbel_noise((s, t, 3), seed=0, step=0).to(device)
    with torch.no_grad():  # a policy away from uniform, so GDAS samples every kind of branch
        for m in model.search_nodes:
            m.policy.normal_(0, 1)

    def step(run) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        feats = run()
        sum(f.square().mean() for f in feats).backward()
        return feats, {k: p.grad for k, p in model.named_parameters()}

    def fused():
        y = model(x, "soft", noise=noise, tau=5.0)
        return [y[:, i] for i in range(t)]

    def reference():
        return model.forward_reference(x, "soft", noise=noise, tau=5.0)

    def gdas():
        y = model(x, "gdas", noise=noise, tau=5.0)
        return [y[:, i] for i in range(t)]

    fa, ga = step(fused)
    fa = [f.detach().clone() for f in fa]
    ga = {k: g.clone() for k, g in ga.items() if g is not None}
    fb, gb = step(reference)
    diffs = [((u - v).norm() / v.norm().clamp_min(1e-12)).item() for u, v in zip(fa, fb)]
    scale = torch.cat([g.flatten() for g in gb.values() if g is not None]).norm().item()
    diffs += [((g - gb[k]).norm() / (gb[k].norm() + 1e-3 * scale)).item() for k, g in ga.items()]
    times = timed({"fused": lambda: step(fused), "reference": lambda: step(reference),
                   "gdas": lambda: step(gdas)}, args.repeats, args.warmup, device)
    counter = FlopCounterMode(display=False)
    with counter:
        step(fused)
    flops = counter.get_total_flops()
    out = {"tasks": t, "fused_step_s": round(times["fused"], 4),
           "reference_step_s": round(times["reference"], 4),
           "gdas_step_s": round(times["gdas"], 4),
           "search_step_speedup": round(times["reference"] / times["fused"], 3),
           "gdas_speedup": round(times["fused"] / times["gdas"], 3),
           "max_rel_diff": max(diffs), "step_gflop": round(flops / 1e9, 3),
           "gflops": round(flops / times["fused"] / 1e9, 2)}
    out["peak_memory_mb"] = peak_memory(path, t, args, device)
    return out


def peak_memory(path: Path, t: int, args, device: torch.device) -> float:
    """Memory one fused step needs: CUDA's peak allocation, or on CPU the resident-set growth
    of a fresh process over the step (measured in a child, so earlier runs do not count)."""
    if device.type == "cuda":
        tasks = tuple(f"task{i}" for i in range(t))
        graph = build_graph(path, CompileOptions(
            input_shapes={None: (args.batch, 3, args.size, args.size)})).graph
        model = build_supermodel(graph, SearchSpace(tasks)).to(device)
        x = torch.randn(t, args.batch, 3, args.size, args.size, device=device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        model(x, "soft", tau=5.0).square().mean().backward()
        return round((torch.cuda.max_memory_allocated(device) - before) / 2 ** 20, 1)
    code = f"""
import resource, sys, torch
sys.path.insert(0, {str(ROOT)!r})
from automtl_cli.compiler.space import SearchSpace
from automtl_cli.compiler.supermodel import build_supermodel
from automtl_cli.frontend.build import CompileOptions, build_graph
g = build_graph({str(path)!r}, CompileOptions(input_shapes={{None: ({args.batch}, 3, {args.size},
                {args.size})}})).graph
m = build_supermodel(g, SearchSpace(tuple(f"t{{i}}" for i in range({t}))))
x = torch.randn({t}, {args.batch}, 3, {args.size}, {args.size})
rss = int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()
m(x, "soft", tau=5.0).square().mean().backward()
# VmHWM belongs to this address space (ru_maxrss would include the parent's, from the fork)
hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))
print(max(hwm * 1024 - rss, 0) / 2 ** 20)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=900)
    return round(float(done.stdout.strip().splitlines()[-1]), 1) if done.returncode == 0 \
        else float("nan")


def inference(path: Path, t: int, args, device: torch.device) -> dict:
    """A derived model with its first half shared: the tree against a per-task loop."""
    tasks = tuple(f"task{i}" for i in range(t))
    b, hw = args.batch, args.size
    graph = build_graph(path, CompileOptions(input_shapes={None: (b, 3, hw, hw)})).graph
    s = len(graph.searchable)
    choices = {n.name: [0] * t if i < s // 2 else [1] * t
               for i, n in enumerate(graph.searchable)}
    out = {}
    x = torch.randn(b, 3, hw, hw, device=device)
    for bn in ("task", "follow"):
        space = SearchSpace(tasks, bn)
        supermodel = build_supermodel(graph, space)
        tree = build_tree(graph, space, choices)
        whole = DerivedBackbone(tree, graph, space, supermodel).to(device).eval()
        singles = [DerivedBackbone(_restricted(tree, task), graph, space, supermodel)
                   .to(device).eval() for task in tasks]

        def tree_call(whole=whole):
            with torch.no_grad():
                whole(x)

        def loop_call(singles=singles):
            with torch.no_grad():
                for net in singles:
                    net(x)

        times = timed({"tree": tree_call, "loop": loop_call}, args.repeats, args.warmup,
                      device)
        flops_tree = sum(v.flops for v in tree.values)
        flops_loop = sum(sum(v.flops for v in tree.path(task)) for task in tasks)
        measured = times["loop"] / times["tree"]
        predicted = flops_loop / flops_tree
        out[f"inference_speedup_{bn}"] = round(measured, 3)
        out[f"flops_ratio_{bn}"] = round(predicted, 3)
        out[f"inference_vs_flops_{bn}"] = round(predicted / measured, 3)
    return out


def _restricted(tree: Tree, task: str) -> Tree:
    return Tree((task,), tree.path(task), {task: tree.outputs[task]}, tree.input_shape)


def gdas_policy(args) -> dict:
    """One short search with each estimator on the synthetic scenes, same seed."""
    import os
    import tempfile

    from automtl_cli.cli.main import main

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "exp.prototxt"
        spec.write_text(
            'name: "bench" task { type: "seg" head { type: LIGHT } } '
            'task { type: "depth" head { type: LIGHT } } task { type: "normal" head { type: '
            'LIGHT } } data { source: SYNTHETIC batch_size: 8 val_batch_size: 16 synthetic { '
            'image_size: 32 train: 64 train1: 64 train2: 64 val: 64 test: 32 } }')
        os.environ.setdefault("AUTOMTL_CACHE", str(Path(tmp) / "cache"))
        for estimator in ("soft", "gdas"):
            run = Path(tmp) / estimator
            with contextlib.redirect_stdout(io.StringIO()):  # stdout carries our JSON only
                main(["-q", "compile", str(ROOT / "specs" / "resnet18_w8.prototxt"), "-o",
                      str(run), "--tasks", "seg,depth,normal"])
                main(["-q", "search", str(run), "--experiment", str(spec), "--warmup-iters",
                      str(args.policy_warmup), "--iters", str(args.policy_iters),
                      "--estimator", estimator, "--policy-lr", "0.05", "--tau-every", "5",
                      "--checkpoint-every", "1000", "--log-every", "10"])
            out[estimator] = _searched(run, spec)
    return out


def _searched(run: Path, spec: Path) -> dict:
    from automtl_cli.data.loader import build_loader
    from automtl_cli.engine.network import SearchNetwork
    from automtl_cli.engine.runconfig import setup_run
    from automtl_cli.experiment import build_stage_experiment
    from automtl_cli.tasks import build_tasks

    state = torch.load(run / "search" / "last.pt", weights_only=True)
    experiment = build_stage_experiment(str(spec), None, None)
    setup = setup_run(run, experiment, 8)
    tasks = build_tasks(experiment)
    net = SearchNetwork(build_supermodel(setup.graph, setup.space), tasks, 0)
    net.load_state_dict(state["model"])
    net.eval()
    loader = build_loader(experiment.data, tuple(t.name for t in tasks), "val")
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in loader.epoch(0):
            preds = net(batch["image"], "hard")
            total += float(sum(t.loss(preds[t.name], batch) for t in tasks))
            n += 1
    logits = net.backbone.logits()
    return {"sharing": round(float((logits.argmax(-1) == 0).float().mean()), 4),
            "val_loss": round(total / max(n, 1), 4)}


def table(out: dict) -> str:
    lines = ["| backbone | T | compile ms | fused s | reference s | search speedup | GDAS s | "
             "GDAS speedup | max rel diff | GFLOP/s | efficiency | peak MB |",
             "|" + "---|" * 12]
    for r in out["search"]:
        lines.append(f"| {r['backbone']} | {r['tasks']} | {r['compile_ms']} | "
                     f"{r['fused_step_s']} | {r['reference_step_s']} | "
                     f"{r['search_step_speedup']} | {r['gdas_step_s']} | {r['gdas_speedup']} | "
                     f"{r['max_rel_diff']:.1e} | {r['gflops']} | {r['efficiency']} | "
                     f"{r['peak_memory_mb']} |")
    lines += ["", "| backbone | T | inference speedup (task) | FLOPs ratio (task) | "
              "inference speedup (follow) | FLOPs ratio (follow) | FLOPs/measured (follow) |",
              "|" + "---|" * 7]
    for r in out["inference"]:
        lines.append(f"| {r['backbone']} | {r['tasks']} | {r['inference_speedup_task']} | "
                     f"{r['flops_ratio_task']} | {r['inference_speedup_follow']} | "
                     f"{r['flops_ratio_follow']} | {r['inference_vs_flops_follow']} |")
    lines += ["", "compile ms by T: " + json.dumps(out["compile_ms"]),
              f"dense float32 matmul: {out['matmul_gflops']} GFLOP/s",
              "GDAS vs soft search (synthetic, same seed): " + json.dumps(out["gdas_policy"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CI-sized)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", default="3,5", help="task counts to measure")
    parser.add_argument("--batch", type=int, default=8, help="batch per task")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.repeats, args.warmup = (2, 1) if args.quick else (5, 2)
    args.policy_warmup, args.policy_iters = (10, 30) if args.quick else (40, 160)
    device = torch.device(args.device)
    counts = [int(c) for c in args.tasks.split(",")]
    out: dict = {"device": str(device), "threads": torch.get_num_threads(),
                 "matmul_gflops": round(matmul_gflops(device, args.repeats + 2), 2),
                 "compile_ms": {}, "search": [], "inference": []}
    for name in args.backbones.split(","):
        path = ROOT / BACKBONES[name]
        out["compile_ms"][name] = {t: compile_ms(path, t, 2 * args.repeats + 1)
                                   for t in (2, 3, 5)}
        for t in counts:
            row = {"backbone": name, "compile_ms": out["compile_ms"][name][t],
                   **search_steps(path, t, args, device)}
            row["efficiency"] = round(row["gflops"] / out["matmul_gflops"], 3)
            out["search"].append(row)
            out["inference"].append({"backbone": name, "tasks": t,
                                     **inference(path, t, args, device)})
            print(f"{name} T={t}: done", file=sys.stderr)
    out["gdas_policy"] = gdas_policy(args)
    first = out["search"][0]
    out.update({k: first[k] for k in ("search_step_speedup", "gdas_speedup", "max_rel_diff",
                                      "peak_memory_mb", "efficiency")})
    out.update({k: out["inference"][0][k] for k in ("inference_speedup_task",
                                                    "inference_speedup_follow")})
    if not args.json:
        print(table(out))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
