"""The process keeps freed memory (automtl_cli/allocator.py): a training step's large tensors,
allocated afresh each step, reuse the pages the previous step freed instead of faulting new ones
in. Measured by page faults, which count what happens, not how long it takes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="glibc's malloc tuning applies on Linux only")

# Soft search steps of a Deeplab-R34 supermodel (T = 3, batch 2, 32²) after one warm-up: the
# median of seven steps' page faults. Each step allocates its weight mixtures, gradients and
# activations anew, tens of MB of them, as a real search step does. The median, because a step
# now and then grows the heap (measured: 1–3 faults a step kept, one step in eight 5,000–9,000;
# about 46,000 a step with glibc's defaults, one in eight 2,000).
_FAULTS = """
import json, resource, statistics, sys
sys.path.insert(0, {root!r})
{setup}
import torch
from automtl_cli.compiler.space import SearchSpace
from automtl_cli.compiler.supermodel import build_supermodel
from automtl_cli.frontend.build import CompileOptions, build_graph
torch.set_num_threads(1)
g = build_graph({spec!r}, CompileOptions(input_shapes={{None: (2, 3, 32, 32)}})).graph
m = build_supermodel(g, SearchSpace(("a", "b", "c")), seed=0)
x = torch.randn(3, 2, 3, 32, 32)
def step():
    m.zero_grad(set_to_none=True)
    m(x, "soft", tau=5.0).square().mean().backward()
step()
faults = []
for _ in range(7):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({{"applied": applied, "faults": statistics.median(faults)}}))
"""




def _faults(setup: str, env: dict[str, str] | None = None) -> dict:
    code = _FAULTS.format(root=str(ROOT), setup=setup,
                          spec=str(ROOT / "automtl_cli" / "specs" / "resnet34.prototxt"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


_LIBRARY = ("from automtl_cli.allocator import keep_freed_memory\n"
            "applied = keep_freed_memory()")
_CLI = ("from automtl_cli.cli.main import main\n"
        "applied = main(['--version']) == 0")


@pytest.fixture(scope="module")
def system_default() -> dict:
    return _faults("applied = False")


@pytest.fixture(scope="module")
def kept() -> dict:
    return _faults(_LIBRARY)


def test_kept_memory_is_reused_instead_of_faulted_in(system_default, kept):
    assert kept["applied"] is True
    assert kept["faults"] * 10 < system_default["faults"]


def test_the_cli_keeps_freed_memory_for_every_command(system_default):
    out = _faults(_CLI)
    assert out["applied"] is True
    assert out["faults"] * 10 < system_default["faults"]


def test_the_environment_can_leave_the_system_default(kept):
    out = _faults(_LIBRARY, {"AUTOMTL_KEEP_FREED_MEMORY": "0"})
    assert out["applied"] is False
    assert out["faults"] > 10 * max(kept["faults"], 1)
