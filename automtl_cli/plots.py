"""Pictures (the `plot` extra, matplotlib): the searched policy, a search's log, a run's results.

Each function takes plain data (arrays, the log's records, `run`'s result dicts), writes one
PNG atomically and returns its path; a missing matplotlib is exit 69 with the install line.
Callers that can do without a picture (`run`) catch MissingDependency and say so in one line.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from automtl_cli.extras import require

__all__ = ["BRANCHES", "plot_policy", "plot_results", "plot_search_log"]

BRANCHES = ("shared", "specific", "skip")
BRANCH_COLOURS = ("#2f6fd0", "#e3692b", "#b9b9b9")
# one colour per method kind in the results plot
_METHOD_COLOURS = {"single-task": "#7a7a7a", "hard sharing": "#2f6fd0", "random": "#c9a227",
                   "AutoMTL": "#d62728"}


def _pyplot(purpose: str) -> ModuleType:
    matplotlib = require("matplotlib", "plot", purpose)
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", "plot", purpose)


def _save(fig: Any, plt: ModuleType, path: str | os.PathLike, dpi: int = 110) -> Path:
    from automtl_cli.artifacts import atomic_write

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        plt.close(fig)


def plot_policy(probs: np.ndarray, nodes: Sequence[str], tasks: Sequence[str],
                path: str | os.PathLike, *, title: str | None = None) -> Path:
    """probs: [S, T, 3] probabilities of (shared, specific, skip) per search node and task.

    One column per task, one row per search node (the input at the top); each cell a stacked
    bar of the three probabilities, the chosen (most likely) branch outlined and labelled.
    """
    plt = _pyplot("drawing the policy (--plot)")
    probs = np.asarray(probs, dtype=float)
    n, t = len(nodes), len(tasks)
    fig, axes = plt.subplots(1, max(t, 1), sharey=True, squeeze=False,
                             figsize=(1.2 + 2.1 * max(t, 1), 1.3 + 0.24 * max(n, 1)))
    for j, ax in enumerate(axes[0]):
        for i in range(n):
            left, best = 0.0, int(np.argmax(probs[i, j]))
            for k in range(3):
                p = float(probs[i, j, k])
                chosen = k == best
                ax.barh(i, p, left=left, height=0.78, color=BRANCH_COLOURS[k],
                        edgecolor="black" if chosen else "white",
                        linewidth=1.4 if chosen else 0.4, zorder=3 if chosen else 2)
                if chosen and p >= 0.22:
                    ax.text(left + p / 2, i, f"{p:.2f}", ha="center", va="center",
                            fontsize=6.5, color="white" if k < 2 else "black", zorder=4)
                left += p
        ax.set_xlim(0, 1)
        ax.set_ylim(n - 0.5, -0.5)  # input at the top
        ax.set_xticks([0, 0.5, 1])
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(tasks[j] if t else "", fontsize=9)
        ax.grid(axis="x", color="#dddddd", linewidth=0.5, zorder=0)
        ax.set_axisbelow(True)
    axes[0][0].set_yticks(range(n), list(nodes), fontsize=6.5)
    axes[0][0].set_ylabel("search node (input at the top)", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in BRANCH_COLOURS]
    height = fig.get_figheight()
    fig.suptitle(title or "searched policy: P(branch) per node and task; outlined = chosen",
                 fontsize=9, y=1 - 0.06 / height, va="top")
    fig.legend(handles, BRANCHES, loc="upper center", ncol=3, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.26 / height))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.42 / height))
    return _save(fig, plt, path)


def plot_search_log(records: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """A search's log.jsonl over steps: each task's loss, τ, the shared fraction, and the
    policy's entropy with how decided it is; the warm-up shaded."""
    plt = _pyplot("drawing the search log (--plot)")
    steps = np.array([r["step"] for r in records], dtype=float)
    fig, axes = plt.subplots(2, 2, sharex=True, figsize=(8.0, 5.2))
    (loss_ax, tau_ax), (share_ax, ent_ax) = axes
    tasks = list(records[0]["loss"]) if records else []
    for task in tasks:
        loss_ax.plot(steps, [r["loss"][task] for r in records], label=task, linewidth=1.2)
    loss_ax.set_title("task losses (mean since the previous line)", fontsize=9)
    if len(tasks):
        loss_ax.legend(fontsize=7, frameon=False)
    tau_ax.plot(steps, [r.get("tau", math.nan) for r in records], color="#444444")
    tau_ax.set_title("Gumbel-softmax temperature τ", fontsize=9)
    share_ax.plot(steps, [r.get("sharing", math.nan) for r in records], color=BRANCH_COLOURS[0])
    share_ax.set_ylim(-0.02, 1.02)
    share_ax.set_title("fraction of (node, task) choices shared", fontsize=9)
    ent_ax.plot(steps, [r.get("entropy", math.nan) for r in records], color="#8c564b",
                label="entropy (nats)")
    ent_ax.plot(steps, [r.get("decided", math.nan) for r in records], color="#2ca02c",
                label="decided (mean p of the chosen branch)")
    ent_ax.axhline(math.log(3), color="#8c564b", linestyle=":", linewidth=0.8)
    ent_ax.set_title("policy entropy and decidedness", fontsize=9)
    ent_ax.legend(fontsize=7, frameon=False)
    warm = [r["step"] for r in records if r.get("stage") == "warmup"]
    for ax in axes.flat:
        if warm:
            ax.axvspan(0, max(warm), color="#f0f0f0", zorder=0)
        ax.tick_params(labelsize=7)
        ax.grid(color="#e5e5e5", linewidth=0.5)
    for ax in axes[1]:
        ax.set_xlabel("step" + (" (grey: warm-up)" if warm else ""), fontsize=8)
    fig.tight_layout()
    return _save(fig, plt, path)


def _method_colour(method: str) -> str:
    return _METHOD_COLOURS.get(method.split(" ")[0] if method.startswith("random")
                               else method, "#9467bd")


def plot_results(results: Mapping[str, Mapping[str, Any]], tasks: Sequence[Any],
                 path: str | os.PathLike) -> Path:
    """`run`'s comparison on the test split: Δ_T against parameters for every method, and per
    task its main metric (the first of `delta_metrics`) as one bar per method, each labelled
    with its value and its Δ_t. `tasks`: the run's Task objects."""
    plt = _pyplot("drawing the results (results.png)")
    methods = list(results)
    fig, axes = plt.subplots(1, 1 + len(tasks), squeeze=False,
                             figsize=(4.6 + 2.5 * len(tasks), 3.9),
                             gridspec_kw={"width_ratios": [1.7] + [1] * len(tasks)})
    ax = axes[0][0]
    for method in methods:
        out = results[method]
        delta = 0.0 if method == "single-task" else \
            out.get("delta", {}).get("test", {}).get("mean")
        if delta is None:
            continue
        x = out["params"]["total"] / 1e6
        ax.scatter([x], [delta], s=50, color=_method_colour(method), zorder=3,
                   edgecolor="black", linewidth=0.5)
        ax.annotate(method, (x, delta), textcoords="offset points", xytext=(6, 3), fontsize=7.5)
    ax.axhline(0, color="#999999", linewidth=0.7, zorder=1)
    ax.set_xlabel("parameters (M), all tasks", fontsize=8)
    ax.set_ylabel("Δ_T against single-task (%)", fontsize=8)
    ax.set_title("accuracy against size (up and left is better)", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.grid(color="#e5e5e5", linewidth=0.5)
    ax.margins(x=0.3, y=0.25)
    for bar_ax, task in zip(axes[0][1:], tasks):
        metric = task.delta_metrics[0]
        values = [results[m]["metrics"]["test"][task.name][metric] for m in methods]
        bars = bar_ax.bar(range(len(methods)), values, width=0.7,
                          color=[_method_colour(m) for m in methods], edgecolor="black",
                          linewidth=0.4)
        low, high = min(values), max(values)
        pad = (high - low) or abs(high) * 0.05 or 0.05
        bar_ax.set_ylim(low - 0.8 * pad if low - 0.8 * pad > 0 or low < 0 else 0,
                        high + 0.45 * pad)
        for m, b, v in zip(methods, bars, values):
            d = results[m].get("delta", {}).get("test", {}).get("per_task", {}).get(task.name)
            label = f"{v:.3g}" + ("" if m == "single-task" or d is None else f"\n{d:+.1f}%")
            bar_ax.annotate(label, (b.get_x() + b.get_width() / 2, v), ha="center",
                            va="bottom", fontsize=6.5, textcoords="offset points",
                            xytext=(0, 1.5))
        better = "higher" if task.higher_is_better[metric] else "lower"
        bar_ax.set_title(f"{task.name}: {metric} ({better} is better)", fontsize=9)
        bar_ax.set_xticks(range(len(methods)), methods, rotation=40, ha="right", fontsize=7)
        bar_ax.tick_params(axis="y", labelsize=7)
        bar_ax.grid(axis="y", color="#e5e5e5", linewidth=0.5)
        bar_ax.set_axisbelow(True)
    fig.suptitle("test split. Bars: each task's main metric, labelled with its value and the "
                 "task's Δ_t over all its metrics (Δ_T is their mean)", fontsize=8, y=0.99)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return _save(fig, plt, path)
