#!/usr/bin/env python
"""Speed benchmark: every figure a ratio of two things measured side by side in one run.

For Deeplab-ResNet34 at full width and ResNet-34 at width 16 (64×64 input, batch 4 per task,
T = 3 by default) it reports:

* `compile_ms`: front end + search-space accounting, in process, for T = 2, 3, 5;
* `search_step_speedup`: one soft search step (forward and backward), the fused all-task pass
  against the per-task execution of the same search space (`Supermodel.forward_reference`:
  one task at a time, every branch computed), timed alternately (A, B, A, B, ...; medians) so
  that machine noise hits both; `max_rel_diff` is their largest relative difference over the
  features of every task and the gradient of every parameter;
* FLOPs by formula, per op (`flops` of the layer table, `automtl_cli/frontend/ops/`: grouped and
  depthwise convolutions right): `step_gflop` of the fused step (forward, input and weight
  gradients; no input gradient for the first layer), `reference_gflop` of the per-task one
  (twice the convolutions), `flops_ratio` the second over the first (the speed-up the fused
  step would have at equal rates per FLOP); `gflops` is the fused step's achieved rate,
  `plain_conv_gflops` the rate of plain (ungrouped, one task) convolutions of the same shapes,
  forward and backward, timed here, and `efficiency` their ratio (1.0: the whole step,
  mixture, BatchNorm and all, runs at the machine's convolution rate); `conv_efficiency` the
  same for the step's convolutions alone, as the fused model runs them (`SearchConv.mode`,
  per layer);
* `scaling`: the fused step for T = 2, 3, 5, 10 (how cost grows with tasks);
* `gdas_speedup`: a GDAS step (only the sampled branch runs) against a soft step, and, on the
  synthetic scenes, one short search with each (same seed): sharing fraction and validation loss;
* `hard_speedup`: hard-mode inference of the supermodel (all tasks, one pass) against the
  per-task execution of the chosen branches (one derived single-task network per task);
* `inference_speedup_task` / `_follow`: all-task inference of a derived model with about half of
  its convolutions shared (the first half), the tree against a per-task loop, under `--bn task`
  and `--bn follow`, with the FLOPs ratio the tree should achieve (`flops_ratio_*`);
* `peak_memory_mb`: the resident-set growth of one fused search step (CPU) or the peak allocated
  memory (GPU);
* `bf16_speedup`: the fused step under `torch.autocast(bfloat16)` against float32 (`--precision`);
* `compile_speedup`: the fused step through `torch.compile` against eager (`--compile`);
* `overhead`: the real search and fine-tune loops on the synthetic scenes, time per step in the
  loop against the bare step (forward, backward, optimiser): the share spent elsewhere (data,
  logging, bookkeeping);
* `layers` (`--layers`): per convolution shape, T grouped / T plain / channels-last timings, the
  evidence behind `conv_mode`;
* `allocator`: whether the process keeps freed memory, as the CLI does (`automtl_cli/allocator.py`).

Usage: python scripts/bench.py [--quick] [--json] [--device cpu|cuda] [--tasks 3,5]
           [--precision fp32|bf16|both] [--compile] [--layers] [--channels-last] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# As the CLI does (automtl_cli/cli/main.py): spinning OpenMP threads make every kernel many times
# slower as soon as another process wants the same cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from automtl_cli.allocator import keep_freed_memory  # noqa: E402
from automtl_cli.compiler.derived import DerivedBackbone, Tree, build_tree  # noqa: E402
from automtl_cli.compiler.space import SearchSpace, space_summary  # noqa: E402
from automtl_cli.compiler.strategies.skip import SkipKind  # noqa: E402
from automtl_cli.compiler.supermodel import build_supermodel, gumbel_noise  # noqa: E402
from automtl_cli.frontend.build import CompileOptions, build_graph  # noqa: E402
from automtl_cli.frontend.ops import LAYER_KINDS  # noqa: E402

BACKBONES = {"deeplab_resnet34": "specs/resnet34.prototxt",
             "resnet34_w16": "specs/resnet34_w16.prototxt"}
SCALING_TASKS = (2, 3, 5, 10)
TARGETS = {"search_step_speedup/deeplab_resnet34": 2.0, "search_step_speedup/resnet34_w16": 2.5,
           "bf16_speedup/deeplab_resnet34": 1.3, "hard_speedup/deeplab_resnet34": 1.0,
           "overhead_share/search": 0.05, "overhead_share/finetune": 0.05}


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


def autocast(device: torch.device, precision: str):
    """bf16: autocast with float32 master weights (what `--precision bf16` runs)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


# ---------------------------------------------------------------------- FLOPs by formula

def _passes(graph, node) -> int:
    """Forward, weight gradient and input gradient: 3; 2 where the input is the image."""
    return 2 if node.inputs[0] in graph.inputs else 3


def step_flops(model, graph, n: int) -> dict[str, float]:
    """One search step's FLOPs (forward and backward) by formula, per op, for N images a task:
    the fused step computes every searchable convolution once per task (the shared op and the
    task copy are one convolution of mixed weights), the per-task execution twice."""
    shapes = graph.value_shapes()
    t = len(model.tasks)
    conv = other = skip = 0
    for node in graph.nodes:
        f = LAYER_KINDS[node.type].flops(node.attrs, [shapes[v] for v in node.inputs],
                                         node.shapes)
        if not f:
            continue
        if node.searchable:
            conv += f * _passes(graph, node)
        else:
            other += f * _passes(graph, node)
    for m, node in zip(model.search_nodes, graph.searchable):
        if m.skip.kind is SkipKind.CONV:
            ho, wo = node.shapes[0][2:]
            skip += 2 * m.skip.plan.in_channels * m.skip.plan.out_channels * ho * wo \
                * _passes(graph, node)
    return {"fused": (conv + skip + other) * n * t, "reference": (2 * conv + skip + other) * n * t,
            "conv": conv * n * t}


def conv_rates(model, graph, n: int, args, device: torch.device, modes=None) -> dict:
    """The step's searchable convolutions, forward and backward, timed per distinct shape: as
    plain single-task convolutions (×T, the machine's rate for these shapes) and as the fused
    model runs them (`SearchConv._convolve` in each layer's mode, or each of `modes`)."""
    shapes = graph.value_shapes()
    t = len(model.tasks)
    groups: dict[tuple, list] = {}
    for m, node in zip(model.search_nodes, graph.searchable):
        key = (tuple(shapes[node.inputs[0]]), tuple(node.shapes[0]), str(node.attrs["kernel"]),
               str(node.attrs["stride"]), str(node.attrs["dilation"]), node.attrs["group"],
               _passes(graph, node))
        groups.setdefault(key, []).append((m, node))
    total = {"plain": 0.0, "fused": 0.0}
    per_mode: dict[str, float] = {}
    flops = 0.0
    rows = []
    for key, members in groups.items():
        m, node = members[0]
        conv = m.shared
        (_, c, h, w), first = key[0], key[-1] == 2
        f = LAYER_KINDS[node.type].flops(node.attrs, [key[0]], node.shapes) * n * key[-1]
        xp = torch.randn(n, c, h, w, device=device, requires_grad=not first)
        wp = torch.randn_like(conv.weight, requires_grad=True)
        xf = torch.randn(n, t * c, h, w, device=device, requires_grad=not first)
        wf = torch.randn(t, *conv.weight.shape, device=device, requires_grad=True)

        def plain(xp=xp, wp=wp, conv=conv):
            with autocast(device, args.precision):
                y = F.conv2d(xp, wp, None, conv.stride, conv.padding, conv.dilation, conv.groups)
            y.backward(torch.ones_like(y))

        with autocast(device, args.precision):
            mode_in_region = m._active_mode(xf)  # the layer's mode in this precision

        def fused(m=m, xf=xf, wf=wf, mode=mode_in_region):
            with autocast(device, args.precision):
                y = m._convolve(xf, wf, None, mode)
            y.backward(torch.ones_like(y))

        fns = {"plain": plain, "fused": fused}
        for mode in modes or ():
            fns[mode] = lambda mode=mode, fused=fused: fused(mode=mode)
        r = timed(fns, args.repeats, 1, device)
        k = len(members)
        total["plain"] += r["plain"] * t * k
        total["fused"] += r["fused"] * k
        for mode in modes or ():
            per_mode[mode] = per_mode.get(mode, 0.0) + r[mode] * k
        flops += f * t * k
        rows.append({"input": list(key[0]), "output": list(key[1]), "kernel": key[2],
                     "stride": key[3], "dilation": key[4], "group": key[5], "count": k,
                     "mode": mode_in_region, "plain_x_T_ms": round(r["plain"] * t * 1e3, 3),
                     **{f"{name}_ms": round(v * 1e3, 3) for name, v in r.items()
                        if name != "plain"}})
    out = {"plain_conv_gflops": round(flops / total["plain"] / 1e9, 2),
           "fused_conv_gflops": round(flops / total["fused"] / 1e9, 2),
           "conv_efficiency": round(total["plain"] / total["fused"], 3)}
    if modes:
        out["layers"] = rows
        out["layer_totals_s"] = {"plain_x_T": round(total["plain"], 4),
                                 "as_built": round(total["fused"], 4),
                                 **{k: round(v, 4) for k, v in per_mode.items()}}
    return out


# ---------------------------------------------------------------------- search steps

def _model(path: Path, t: int, args, device: torch.device):
    tasks = tuple(f"task{i}" for i in range(t))
    graph = build_graph(path, CompileOptions(
        input_shapes={None: (args.batch, 3, args.size, args.size)})).graph
    model = build_supermodel(graph, SearchSpace(tasks), seed=0).to(device)
    if args.channels_last:
        for m in model.search_nodes:
            m.mode = m.mode_autocast = "channels_last"
    with torch.no_grad():  # a policy away from uniform, so GDAS samples every kind of branch
        for m in model.search_nodes:
            m.policy.normal_(0, 1)
    return graph, model


def _step_fns(model, graph, t: int, args, device: torch.device):
    b, hw = args.batch, args.size
    x = torch.randn(t, b, 3, hw, hw, device=device)
    noise = gumbel_noise((len(graph.searchable), t, 3), seed=0, step=0).to(device)

    def step(run, precision=args.precision):
        model.zero_grad(set_to_none=True)
        with autocast(device, precision):
            feats = run()
            loss = sum(f.float().square().mean() for f in feats)
        loss.backward()
        return feats, {k: p.grad for k, p in model.named_parameters()}

    def fused(net=model):
        y = net(x, "soft", noise=noise, tau=5.0)
        return [y[:, i] for i in range(t)]

    def reference():
        return model.forward_reference(x, "soft", noise=noise, tau=5.0)

    def gdas():
        y = model(x, "gdas", noise=noise, tau=5.0)
        return [y[:, i] for i in range(t)]

    return step, fused, reference, gdas


def search_steps(path: Path, t: int, args, device: torch.device) -> dict:
    """Fused soft vs per-task execution, GDAS vs soft, agreement, FLOP rates, memory."""
    graph, model = _model(path, t, args, device)
    step, fused, reference, gdas = _step_fns(model, graph, t, args, device)
    fa, ga = step(fused)
    fa = [f.detach().float().clone() for f in fa]
    ga = {k: g.clone() for k, g in ga.items() if g is not None}
    fb, gb = step(reference)
    diffs = [((u - v.float()).norm() / v.float().norm().clamp_min(1e-12)).item()
             for u, v in zip(fa, fb)]
    scale = torch.cat([g.flatten() for g in gb.values() if g is not None]).norm().item()
    diffs += [((g - gb[k]).norm() / (gb[k].norm() + 1e-3 * scale)).item() for k, g in ga.items()]
    fns = {"fused": lambda: step(fused), "reference": lambda: step(reference),
           "gdas": lambda: step(gdas)}
    if args.precision in ("bf16", "both"):
        fns["fused_fp32"] = lambda: step(fused, "fp32")
        fns["fused_bf16"] = lambda: step(fused, "bf16")
    compiled_s = None
    if args.compile:
        net = torch.compile(model)
        t0 = time.perf_counter()
        step(lambda: fused(net))
        compiled_s = time.perf_counter() - t0
        fns["compiled"] = lambda: step(lambda: fused(net))
    times = timed(fns, args.repeats, args.warmup, device)
    flops = step_flops(model, graph, args.batch)
    out = {"tasks": t, "precision": args.precision, "fused_step_s": round(times["fused"], 4),
           "reference_step_s": round(times["reference"], 4),
           "gdas_step_s": round(times["gdas"], 4),
           "search_step_speedup": round(times["reference"] / times["fused"], 3),
           "gdas_speedup": round(times["fused"] / times["gdas"], 3),
           "max_rel_diff": max(diffs), "step_gflop": round(flops["fused"] / 1e9, 3),
           "reference_gflop": round(flops["reference"] / 1e9, 3),
           # the speed-up at equal rates per FLOP: above it only by faster kernels per FLOP
           "flops_ratio": round(flops["reference"] / flops["fused"], 3),
           "gflops": round(flops["fused"] / times["fused"] / 1e9, 2),
           "reference_gflops": round(flops["reference"] / times["reference"] / 1e9, 2)}
    if "fused_bf16" in times:
        out["bf16_speedup"] = round(times["fused_fp32"] / times["fused_bf16"], 3)
        out["fused_fp32_s"] = round(times["fused_fp32"], 4)
        out["fused_bf16_s"] = round(times["fused_bf16"], 4)
    if compiled_s is not None:
        out["compile_speedup"] = round(times["fused"] / times["compiled"], 3)
        out["compiled_step_s"] = round(times["compiled"], 4)
        out["compile_first_call_s"] = round(compiled_s, 2)
    rates = conv_rates(model, graph, args.batch, args, device,
                       ("grouped", "separate", "channels_last", "gemm") if args.layers else None)
    out.update(rates)
    out["efficiency"] = round(out["gflops"] / rates["plain_conv_gflops"], 3)
    out["peak_memory_mb"] = peak_memory(path, t, args, device)
    return out


def scaling(path: Path, args, device: torch.device) -> dict:
    """The fused step against T: seconds, and seconds per task."""
    out = {}
    for t in SCALING_TASKS:
        graph, model = _model(path, t, args, device)
        step, fused, _, _ = _step_fns(model, graph, t, args, device)
        s = timed({"fused": lambda step=step, fused=fused: step(fused)},
                  max(args.repeats // 2, 1), 1, device)["fused"]
        out[str(t)] = {"step_s": round(s, 4), "per_task_s": round(s / t, 4)}
        del model
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
        with autocast(device, args.precision):
            loss = model(x, "soft", tau=5.0).float().square().mean()
        loss.backward()
        return round((torch.cuda.max_memory_allocated(device) - before) / 2 ** 20, 1)
    amp = "torch.autocast('cpu', dtype=torch.bfloat16)" if args.precision == "bf16" \
        else "contextlib.nullcontext()"
    code = f"""
import contextlib, resource, sys, torch
sys.path.insert(0, {str(ROOT)!r})
from automtl_cli.allocator import keep_freed_memory
keep_freed_memory()
from automtl_cli.compiler.space import SearchSpace
from automtl_cli.compiler.supermodel import build_supermodel
from automtl_cli.frontend.build import CompileOptions, build_graph
g = build_graph({str(path)!r}, CompileOptions(input_shapes={{None: ({args.batch}, 3, {args.size},
                {args.size})}})).graph
m = build_supermodel(g, SearchSpace(tuple(f"t{{i}}" for i in range({t}))))
x = torch.randn({t}, {args.batch}, 3, {args.size}, {args.size})
rss = int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()
with {amp}:
    loss = m(x, "soft", tau=5.0).float().square().mean()
loss.backward()
# VmHWM belongs to this address space (ru_maxrss would include the parent's, from the fork)
hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))
print(max(hwm * 1024 - rss, 0) / 2 ** 20)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=900)
    return round(float(done.stdout.strip().splitlines()[-1]), 1) if done.returncode == 0 \
        else float("nan")


# ---------------------------------------------------------------------- inference

def _random_choices(graph, t: int, seed: int = 0) -> dict[str, list[int]]:
    g = torch.Generator().manual_seed(seed)
    return {n.name: torch.randint(0, 3, (t,), generator=g).tolist() for n in graph.searchable}


def hard_mode(path: Path, t: int, args, device: torch.device) -> dict:
    """All-task hard inference: the supermodel on one batch for every task (its derived
    network on its own tensors) against the chosen branches run one task at a time (a derived
    single-task network per task), a random policy."""
    tasks = tuple(f"task{i}" for i in range(t))
    b, hw = args.batch, args.size
    graph = build_graph(path, CompileOptions(input_shapes={None: (b, 3, hw, hw)})).graph
    space = SearchSpace(tasks)
    supermodel = build_supermodel(graph, space).to(device).eval()
    choices = _random_choices(graph, t)
    policy = torch.tensor([choices[n.name] for n in graph.searchable])
    tree = build_tree(graph, space, choices)
    singles = [DerivedBackbone(_restricted(tree, task), graph, space, supermodel.cpu())
               .to(device).eval() for task in tasks]
    supermodel.to(device)
    x = torch.randn(b, 3, hw, hw, device=device)

    def whole():
        with torch.no_grad(), autocast(device, args.precision):
            supermodel(x, "hard", policy=policy)

    def loop():
        with torch.no_grad(), autocast(device, args.precision):
            for net in singles:
                net(x)

    r = timed({"supermodel": whole, "per_task": loop}, args.repeats, args.warmup, device)
    return {"hard_supermodel_s": round(r["supermodel"], 4),
            "hard_per_task_s": round(r["per_task"], 4),
            "hard_speedup": round(r["per_task"] / r["supermodel"], 3)}


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
            with torch.no_grad(), autocast(device, args.precision):
                whole(x)

        def loop_call(singles=singles):
            with torch.no_grad(), autocast(device, args.precision):
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


# ---------------------------------------------------------------------- the real loops

_EXPERIMENT = ('name: "bench" task {{ type: "seg" head {{ type: LIGHT }} }} '
               'task {{ type: "depth" head {{ type: LIGHT }} }} task {{ type: "normal" head {{ '
               'type: LIGHT }} }} data {{ source: SYNTHETIC batch_size: {batch} '
               'val_batch_size: 16 synthetic {{ image_size: {size} train: 64 train1: 64 '
               'train2: 64 val: 32 test: 32 }} }}')


@contextlib.contextmanager
def _timing(owner, name: str, into: dict[str, float]):
    """Accumulate the seconds spent in `owner.name` into `into[name]` while the block runs."""
    original = getattr(owner, name)

    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return original(*a, **kw)
        finally:
            into[name] = into.get(name, 0.0) + time.perf_counter() - t0

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def overhead(args) -> dict:
    """The real search and fine-tune loops on the synthetic scenes (ResNet-34 width 16, T = 3,
    the bench's batch and size): the share of each step spent outside the model's forward,
    backward and optimiser step (fetching data, logging, checkpoints, bookkeeping)."""
    import tempfile

    from automtl_cli.cli.main import main
    from automtl_cli.engine.finetune import Finetuner
    from automtl_cli.engine.search import Searcher
    from automtl_cli.engine.streams import BatchStream

    out = {}
    iters = (4, 8) if args.quick else (10, 30)
    extra = ["--precision", args.precision] if args.precision == "bf16" else []
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "exp.prototxt"
        spec.write_text(_EXPERIMENT.format(batch=args.batch, size=args.size))
        os.environ.setdefault("AUTOMTL_CACHE", str(Path(tmp) / "cache"))
        run = Path(tmp) / "run"
        with contextlib.redirect_stdout(io.StringIO()):
            main(["-q", "compile", str(ROOT / "specs" / "resnet34_w16.prototxt"), "-o",
                  str(run), "--tasks", "seg,depth,normal"])
        for loop, cls, argv in (
                ("search", Searcher, ["-q", "search", str(run), "--experiment", str(spec),
                                      "--warmup-iters", str(iters[0]), "--iters",
                                      str(iters[1]), "--device", args.device, *extra]),
                ("finetune", Finetuner, ["-q", "finetune", str(run), "--iters",
                                         str(sum(iters)), "--device", args.device, *extra])):
            spent: dict[str, float] = {}
            with _timing(cls, "train_step", spent), _timing(BatchStream, "__next__", spent), \
                    _timing(cls, "run", spent), _timing(cls, "save", spent), \
                    _timing(cls, "_log", spent), contextlib.redirect_stdout(io.StringIO()):
                if loop == "finetune":
                    main(["-q", "derive", str(run), "--mode", "argmax"])
                main(argv)
            steps = sum(iters)
            bare = spent["train_step"] - spent.get("__next__", 0.0)
            out[loop] = {"steps": steps, "loop_step_s": round(spent["run"] / steps, 4),
                         "bare_step_s": round(bare / steps, 4),
                         "data_s": round(spent.get("__next__", 0.0) / steps, 4),
                         "checkpoint_s": round(spent.get("save", 0.0) / steps, 4),
                         "log_s": round(spent.get("_log", 0.0) / steps, 4),
                         "overhead_share": round(1 - bare / spent["run"], 4)}
    return out


def gdas_policy(args) -> dict:
    """One short search with each estimator on the synthetic scenes, same seed."""
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
    lines = ["| backbone | T | fused s | per-task s | speedup | GFLOP fused / per-task | "
             "GFLOP/s fused | plain conv GFLOP/s | efficiency | conv efficiency | GDAS "
             "speedup | bf16 speedup | compile speedup | max rel diff | peak MB |",
             "|" + "---|" * 15]
    for r in out["search"]:
        lines.append(f"| {r['backbone']} | {r['tasks']} | {r['fused_step_s']} | "
                     f"{r['reference_step_s']} | {r['search_step_speedup']} | "
                     f"{r['step_gflop']} / {r['reference_gflop']} | {r['gflops']} | "
                     f"{r['plain_conv_gflops']} | {r['efficiency']} | {r['conv_efficiency']} | "
                     f"{r['gdas_speedup']} | {r.get('bf16_speedup', '-')} | "
                     f"{r.get('compile_speedup', '-')} | {r['max_rel_diff']:.1e} | "
                     f"{r['peak_memory_mb']} |")
    lines += ["", "| backbone | T | hard supermodel s | hard per-task s | hard speedup | "
              "tree speedup (task) | FLOPs ratio (task) | tree speedup (follow) | "
              "FLOPs ratio (follow) |", "|" + "---|" * 9]
    for r in out["inference"]:
        lines.append(f"| {r['backbone']} | {r['tasks']} | {r['hard_supermodel_s']} | "
                     f"{r['hard_per_task_s']} | {r['hard_speedup']} | "
                     f"{r['inference_speedup_task']} | {r['flops_ratio_task']} | "
                     f"{r['inference_speedup_follow']} | {r['flops_ratio_follow']} |")
    for name, rows in out.get("scaling", {}).items():
        lines += ["", f"fused step by T ({name}): " + ", ".join(
            f"T={t}: {v['step_s']} s ({v['per_task_s']} s/task)" for t, v in rows.items())]
    for loop, r in out.get("overhead", {}).items():
        lines.append(f"{loop} loop: {r['loop_step_s']} s/step, bare step {r['bare_step_s']} s, "
                     f"data {r['data_s']} s, overhead share {r['overhead_share']:.1%}")
    for key, r in out.get("targets", {}).items():
        bound = f"; FLOP ratio {r['flops_ratio']}" if "flops_ratio" in r else ""
        lines.append(f"target {key}: {r['value']} (want {'≤' if r['at_most'] else '≥'} "
                     f"{r['target']}{bound}): {'met' if r['met'] else 'MISSED'}")
    lines += ["compile ms by T: " + json.dumps(out["compile_ms"]),
              f"dense float32 matmul: {out['matmul_gflops']} GFLOP/s"]
    if "gdas_policy" in out:
        lines.append("GDAS vs soft search (synthetic, same seed): "
                     + json.dumps(out["gdas_policy"]))
    return "\n".join(lines)


def targets(out: dict) -> dict:
    """Issue 18's figures against what was measured (None where not measured)."""
    found: dict[str, float] = {}
    bounds: dict[str, float] = {}
    for r in out["search"]:
        if r["tasks"] == 3:
            found[f"search_step_speedup/{r['backbone']}"] = r["search_step_speedup"]
            bounds[f"search_step_speedup/{r['backbone']}"] = r["flops_ratio"]
            if "bf16_speedup" in r:
                found[f"bf16_speedup/{r['backbone']}"] = r["bf16_speedup"]
    for r in out["inference"]:
        if r["tasks"] == 3:
            found[f"hard_speedup/{r['backbone']}"] = r["hard_speedup"]
    for loop, r in out.get("overhead", {}).items():
        found[f"overhead_share/{loop}"] = r["overhead_share"]
    result = {}
    for key, want in TARGETS.items():
        if key not in found:
            continue
        at_most = key.startswith("overhead")
        value = found[key]
        result[key] = {"value": value, "target": want, "at_most": at_most,
                       "met": value <= want if at_most else value >= want}
        if key in bounds:
            result[key]["flops_ratio"] = bounds[key]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CI-sized)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", default="3", help="task counts to measure")
    parser.add_argument("--batch", type=int, default=4, help="batch per task")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precision", choices=("fp32", "bf16", "both"), default="both",
                        help="fp32 or bf16 (autocast) for every figure; both: fp32, plus the "
                             "bf16 speed-up of the fused step")
    parser.add_argument("--compile", action="store_true",
                        help="also time the fused step through torch.compile")
    parser.add_argument("--channels-last", action="store_true",
                        help="run every searchable convolution in channels-last")
    parser.add_argument("--layers", action="store_true",
                        help="per convolution shape: grouped / separate / channels-last")
    parser.add_argument("--no-scaling", action="store_true", help="skip T = 2, 3, 5, 10")
    parser.add_argument("--no-loops", action="store_true",
                        help="skip the real loops (overhead share) and the GDAS search")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    allocator = "glibc, freed memory kept" if keep_freed_memory() else "system default"
    if args.threads:
        torch.set_num_threads(args.threads)
    args.repeats, args.warmup = (3, 1) if args.quick else (7, 2)
    args.policy_warmup, args.policy_iters = (10, 30) if args.quick else (40, 160)
    device = torch.device(args.device)
    figures = "fp32" if args.precision == "both" else args.precision
    counts = [int(c) for c in args.tasks.split(",")]
    out: dict = {"device": str(device), "threads": torch.get_num_threads(),
                 "torch": torch.__version__, "batch_per_task": args.batch, "size": args.size,
                 "precision": args.precision, "compile": args.compile,
                 "channels_last": args.channels_last, "allocator": allocator,
                 "matmul_gflops": round(matmul_gflops(device, args.repeats + 2), 2),
                 "compile_ms": {}, "search": [], "inference": [], "scaling": {}}
    for name in args.backbones.split(","):
        path = ROOT / BACKBONES[name]
        out["compile_ms"][name] = {t: compile_ms(path, t, 2 * args.repeats + 1)
                                   for t in (2, 3, 5)}
        for t in counts:
            row = {"backbone": name, **search_steps(path, t, args, device)}
            out["search"].append(row)
            step_args = argparse.Namespace(**{**vars(args), "precision": figures})
            out["inference"].append({"backbone": name, "tasks": t,
                                     **hard_mode(path, t, step_args, device),
                                     **inference(path, t, step_args, device)})
            print(f"{name} T={t}: done", file=sys.stderr)
        if not args.no_scaling:
            out["scaling"][name] = scaling(path, argparse.Namespace(
                **{**vars(args), "precision": figures}), device)
    if not args.no_loops:
        loop_args = argparse.Namespace(**{**vars(args), "precision": figures})
        out["overhead"] = overhead(loop_args)
        out["gdas_policy"] = gdas_policy(args)
    first = out["search"][0]
    out.update({k: first[k] for k in ("search_step_speedup", "gdas_speedup", "max_rel_diff",
                                      "peak_memory_mb", "efficiency", "conv_efficiency")})
    out.update({k: out["inference"][0][k] for k in ("inference_speedup_task",
                                                    "inference_speedup_follow",
                                                    "hard_speedup")})
    out["targets"] = targets(out)
    text = json.dumps(out)
    if args.out:
        args.out.write_text(text + "\n")
    if not args.json:
        print(table(out))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
