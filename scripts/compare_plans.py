#!/usr/bin/env python
"""How far apart two sets of searched plans are: a change (bf16, a kernel) against the seeds.

Reads the AutoMTL cells of two `scripts/bench_accuracy.py` cell directories (A: the baseline,
B: the change; computed with the same configuration but for their precision) and prints, per
task set and seed, the share of (node, task) choices where B's plan equals A's plan of the same
seed; for the spread, where A's plans of two different seeds agree; and each side's sharing
fraction and test metrics, mean ± sample standard deviation over the seeds both have.

    python scripts/compare_plans.py benchmarks/precision/fp32 benchmarks/precision/bf16
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_accuracy import _file_name, _fmt  # the cells' layout and their format

METHOD = "AutoMTL"  # the only cells that keep their plan's choices
IGNORED = ("precision",)  # what A and B may differ in


def _cells(root: Path) -> dict[tuple[str, int], tuple[Path, dict]]:
    """(task set, seed) -> (path, cell)."""
    out = {}
    for path in sorted(root.glob(f"*/seed-*/{_file_name(METHOD)}.json")):
        out[(path.parent.parent.name, int(path.parent.name.split("-")[1]))] = (
            path, json.loads(path.read_text()))
    return out


def _choices(path: Path, cell: dict) -> dict[tuple[str, str], str]:
    """(node, task) -> the branch a cell's plan chose there."""
    choices = {(node, task): c for node, per_task in cell.get("choices", {}).items()
               for task, c in per_task.items()}
    if not choices:
        raise SystemExit(f"{path}: no choices of its plan (computed before bench_accuracy.py "
                         "kept them)")
    return choices


def agreement(a: tuple[Path, dict], b: tuple[Path, dict]) -> float:
    ca, cb = _choices(*a), _choices(*b)
    if ca.keys() != cb.keys():
        raise SystemExit(f"{a[0]} and {b[0]}: plans of different search spaces")
    return sum(ca[k] == cb[k] for k in ca) / len(ca)


def _comparable(config: dict | None) -> dict | None:
    if not isinstance(config, dict):
        return config
    return {k: ({f: v for f, v in part.items() if f not in IGNORED}
                if isinstance(part, dict) else part) for k, part in config.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", type=Path, help="cell directory A")
    parser.add_argument("change", type=Path, help="cell directory B")
    args = parser.parse_args(argv)
    a, b = _cells(args.baseline), _cells(args.change)
    common = sorted(a.keys() & b.keys())
    if not common:
        raise SystemExit(f"no {METHOD} cell of the same task set and seed in both")
    for key in common:
        if _comparable(a[key][1].get("config")) != _comparable(b[key][1].get("config")):
            raise SystemExit(f"{a[key][0]} and {b[key][0]}: computed with other "
                             "configurations (beyond precision)")
    print("| task set | seed | B's choices equal to A's | sharing A | sharing B |")
    print("|---|---|---|---|---|")
    for key in common:
        print(f"| {key[0]} | {key[1]} | {agreement(a[key], b[key]):.3f} | "
              f"{a[key][1]['fraction_shared']:.3f} | {b[key][1]['fraction_shared']:.3f} |")
    for task_set in sorted({key[0] for key in common}):
        keys = [key for key in common if key[0] == task_set]
        pairs = list(itertools.combinations(sorted(k for k in a if k[0] == task_set), 2))
        print(f"\n{task_set}:")
        if pairs:
            seeds = [agreement(a[x], a[y]) for x, y in pairs]
            print(f"A's plans of two different seeds agree on {_fmt(seeds)} of the choices "
                  f"({len(pairs)} pairs).")
        for label, side in (("A", a), ("B", b)):
            values = {"sharing": [side[k][1]["fraction_shared"] for k in keys]}
            for k in keys:
                for task, metrics in side[k][1]["metrics"]["test"].items():
                    for name, v in metrics.items():
                        if isinstance(v, (int, float)):
                            values.setdefault(f"{task} {name}", []).append(v)
            shown = ", ".join(f"{k} {_fmt(v)}" for k, v in values.items())
            print(f"{label} ({len(keys)} seeds), test: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
