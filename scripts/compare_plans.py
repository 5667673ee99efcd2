#!/usr/bin/env python
"""How far apart two sets of searched plans are: a change (bf16, a kernel) against the seeds.

Reads the AutoMTL cells of two `scripts/bench_accuracy.py` cell directories (A: the baseline,
B: the change) and prints, per seed, the share of (node, task) choices where B's plan equals A's
plan of the same seed, and, for the spread, where A's plans of two different seeds agree; then
each side's sharing fraction and test metrics, mean ± sample standard deviation over seeds.

    python scripts/compare_plans.py benchmarks/precision/fp32 benchmarks/precision/bf16
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path


def _cells(root: Path, method: str) -> dict[tuple[str, int], dict]:
    out = {}
    for path in sorted(root.glob(f"*/seed-*/{method}.json")):
        out[(path.parent.parent.name, int(path.parent.name.split("-")[1]))] = json.loads(
            path.read_text())
    return out


def _choices(cell: dict) -> dict[tuple[str, str], str]:
    """(node, task) -> the branch a cell's plan chose there."""
    if "choices" not in cell:
        raise SystemExit(f"{cell.get('run')}: a cell without its plan's choices (computed "
                         "before bench_accuracy.py kept them)")
    return {(node, task): c for node, per_task in cell["choices"].items()
            for task, c in per_task.items()}


def agreement(a: dict, b: dict) -> float:
    ca, cb = _choices(a), _choices(b)
    if ca.keys() != cb.keys():
        raise SystemExit("the two plans are of different search spaces")
    return sum(ca[k] == cb[k] for k in ca) / len(ca)


def _fmt(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4g} ± {spread:.2g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", type=Path, help="cell directory A")
    parser.add_argument("change", type=Path, help="cell directory B")
    parser.add_argument("--method", default="AutoMTL")
    args = parser.parse_args(argv)
    a, b = _cells(args.baseline, args.method), _cells(args.change, args.method)
    common = sorted(a.keys() & b.keys())
    if not common:
        raise SystemExit(f"no {args.method} cell of the same task set and seed in both")
    print("| task set | seed | B's choices equal to A's | sharing A | sharing B |")
    print("|---|---|---|---|---|")
    for key in common:
        print(f"| {key[0]} | {key[1]} | {agreement(a[key], b[key]):.3f} | "
              f"{a[key]['fraction_shared']:.3f} | {b[key]['fraction_shared']:.3f} |")
    pairs = [(x, y) for x, y in itertools.combinations(sorted(a), 2) if x[0] == y[0]]
    if pairs:
        seeds = [agreement(a[x], a[y]) for x, y in pairs]
        print(f"\nA's plans of two different seeds agree on {_fmt(seeds)} of the choices "
              f"({len(pairs)} pairs).")
    for label, side in (("A", a), ("B", b)):
        metrics = {}
        for key in common:
            for task, values in side[key]["metrics"]["test"].items():
                for name, v in values.items():
                    if isinstance(v, (int, float)):
                        metrics.setdefault(f"{task} {name}", []).append(v)
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(metrics.items()))
        print(f"\n{label} ({len(common)} seeds), test: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
