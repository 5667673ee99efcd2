#!/usr/bin/env python
"""How the prototxt reader scales: a real file grown to N MB, read in a fresh process each time.

The big file is ResNet-50's deploy file (`../shared/prototxt/caffe/resnet50_deploy.prototxt`)
cut after its identity block `res2b` and that block repeated, with unique layer and blob names,
until the file holds `--mb` megabytes: a valid, shape-checked network of ~10 layers per 2.5 KB.
Three cases, each in its own interpreter so that peak memory is its own:

* `valid`: the whole file compiled by the front end (`build_graph`);
* `duplicate-early`: the same file with its second layer renamed to the first's, an error
  the reader can report at line 21 without reading the rest;
* `unsupported-late`: an unsupported layer type in the last layer (the error needs every layer).

It prints, per case, the wall and CPU time of `build_graph` (after the imports), the peak resident
set of the process (ru_maxrss; the imports alone take about 230 MB) and the outcome; `--json`
prints them as one object. The test suite imports `grow` to make its multi-MB files.

Usage: python scripts/prototxt_scale.py [--mb 20] [--json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESNET50 = ROOT.parent / "shared" / "prototxt" / "caffe" / "resnet50_deploy.prototxt"

__all__ = ["RESNET50", "grow", "rename_second_layer"]

_QUOTED = re.compile(r'^(\s*(?:name|top|bottom)\s*:\s*)"([^"]*)"', re.MULTILINE)


def _block(text: str, first: str, last: str) -> tuple[str, str]:
    """The text before the layer named `first`, and the layers from `first` to `last`."""
    starts = [m.start() for m in re.finditer(r"^layer\s*\{", text, re.MULTILINE)]
    names = [re.search(r'name\s*:\s*"([^"]*)"', text[s:]).group(1) for s in starts]
    i, j = names.index(first), names.index(last)
    end = starts[j + 1] if j + 1 < len(starts) else len(text)
    return text[:starts[i]], text[starts[i]:end]


def grow(megabytes: float, source: Path = RESNET50, first: str = "res2b_branch2a",
         last: str = "res2b_relu") -> tuple[str, int]:
    """ResNet-50 cut after `res2b` and its block repeated to `megabytes` MB: (text, layers).

    Every copy renames the names and tops it defines (`x` → `x_k7`) and reads the previous
    copy's output where the original read the block's input, so each layer stays shaped and
    every name is unique."""
    head, block = _block(source.read_text(), first, last)
    defined = {m.group(2) for m in _QUOTED.finditer(block)
               if not m.group(1).strip().startswith("bottom")}
    outside = {m.group(2) for m in _QUOTED.finditer(block)} - defined
    if len(outside) != 1:
        raise ValueError(f"the block reads {sorted(outside)}; expected one input blob")
    (block_input,) = outside
    output = re.findall(r'top\s*:\s*"([^"]*)"', block)[-1]
    per_copy = block.count("layer {") + block.count("layer{")
    parts = [head, block]
    size, previous, k = len(head) + len(block), output, 0
    target = int(megabytes * 1e6)
    while size < target:
        k += 1

        def rename(m: re.Match, k: int = k, previous: str = previous) -> str:
            value = m.group(2)
            if value == block_input:
                return f'{m.group(1)}"{previous}"'
            return f'{m.group(1)}"{value}_k{k}"'

        copy = _QUOTED.sub(rename, block)
        parts.append(copy)
        size += len(copy)
        previous = f"{output}_k{k}"
    layers = head.count("layer {") + head.count("layer{") + per_copy * (k + 1)
    return "".join(parts), layers


def rename_second_layer(text: str) -> tuple[str, int]:
    """The file with its second layer named like its first, and the second layer's line."""
    names = list(re.finditer(r'name\s*:\s*"([^"]*)"', text))
    first, second = names[1], names[2]  # names[0] is the net's own name
    line = text.count("\n", 0, text.rfind("layer", 0, second.start())) + 1
    return text[:second.start()] + f'name: "{first.group(1)}"' + text[second.end():], line


_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from automtl_cli.errors import AutomtlError
from automtl_cli.frontend.build import build_graph
t1, c1 = time.perf_counter(), time.process_time()
try:
    g = build_graph(sys.argv[1]).graph
    outcome = f"{len(g.nodes)} nodes, {g.params:,} parameters, output {list(g.shape_of(g.output))}"
except AutomtlError as e:
    outcome = "error: " + str(e)[:160]
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"seconds": round(t2 - t1, 3), "cpu_seconds": round(c2 - c1, 3),
                  "import_seconds": round(t1 - t0, 3),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                       / 1024, 1), "outcome": outcome}))
"""


def measure(path: Path) -> dict:
    """Compile `path` in a fresh interpreter: seconds, peak RSS (MB) and what happened."""
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True,
                          text=True, cwd=ROOT, check=True)
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20.0, help="size of the file (default 20)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", type=Path, help="write the files here instead of a temp dir")
    args = parser.parse_args()
    t0 = time.perf_counter()
    text, layers = grow(args.mb)
    grown_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        duplicate, dup_line = rename_second_layer(text)
        last = text.rfind('type: "')
        unsupported = text[:last] + 'type: "Interp"' + text[text.index("\n", last):]
        files = {"valid": text, "duplicate-early": duplicate, "unsupported-late": unsupported}
        results = {"mb": round(len(text) / 1e6, 1), "layers": layers,
                   "generate_seconds": round(grown_s, 2), "duplicate_line": dup_line}
        for case, body in files.items():
            path = out / f"{case}.prototxt"
            path.write_text(body)
            results[case] = measure(path)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{results['mb']} MB, {layers:,} layers (generated in {grown_s:.1f} s)")
    for case in files:
        r = results[case]
        print(f"  {case:17s} {r['seconds']:7.2f} s ({r['cpu_seconds']:.2f} s CPU)  peak RSS "
              f"{r['peak_rss_mb']:7.1f} MB  {r['outcome']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
