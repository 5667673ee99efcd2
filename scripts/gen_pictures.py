#!/usr/bin/env python3
"""Regenerate the README's pictures in docs/ from one `automtl run`.

    python scripts/gen_pictures.py                 # runs `automtl run --random 2` (the README's
                                                   # default chain, ~10 min on 2 cores), then draws
    python scripts/gen_pictures.py --run runs/X    # draws from a finished run directory
    python scripts/gen_pictures.py --quick         # a short run: checks the script, not the method

Writes docs/results.png (what `run` writes beside its table), docs/policy.png (`automtl inspect
RUN/search/last.pt --plot`) and docs/search-log.png (`automtl inspect RUN/search/log.jsonl
--plot`), each through the CLI as a user would draw it. Needs the `plot` extra (matplotlib).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from automtl_cli.cli.main import main as automtl  # noqa: E402

DOCS = ROOT / "docs"
QUICK = ["--search-iters", "40", "--warmup-iters", "10", "--finetune-iters", "40"]


def _automtl(*args: str | Path) -> None:
    code = automtl([str(a) for a in args])
    if code != 0:
        raise SystemExit(f"automtl {' '.join(map(str, args))} failed with exit {code}")


def draw(run: Path, out: Path) -> list[Path]:
    """The three pictures of a finished run, into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if not (run / "results.png").is_file():
        raise SystemExit(f"{run}/results.png is missing: is {run} a finished `automtl run` "
                         "(with matplotlib installed)?")
    shutil.copyfile(run / "results.png", out / "results.png")
    written.append(out / "results.png")
    _automtl("-q", "inspect", run / "search" / "last.pt", "--plot", out / "policy.png")
    written.append(out / "policy.png")
    _automtl("-q", "inspect", run / "search" / "log.jsonl", "--plot", out / "search-log.png")
    written.append(out / "search-log.png")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, help="a finished run directory to draw from")
    p.add_argument("--quick", action="store_true", help="a short run instead of the default")
    p.add_argument("--out", type=Path, default=DOCS, help="where to write (default docs/)")
    args = p.parse_args(argv)
    if args.run:
        written = draw(args.run, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="automtl-pictures-") as tmp:
            run = Path(tmp) / "run"
            _automtl("run", "-o", run, "--random", "2", *(QUICK if args.quick else []))
            written = draw(run, args.out)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
