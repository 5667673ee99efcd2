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

# Five soft search steps of a Deeplab-R34 supermodel (T = 3, batch 2, 32²): the faults of the
# last three, per step. Each step allocates its weight mixtures, gradients and activations anew,
# tens of MB of them, as a real search step does.
_FAULTS = """
import json, resource, sys
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
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({{"applied": applied, "faults": (after - before) / 3}}))
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


def test_kept_memory_is_reused_instead_of_faulted_in(system_default):
    out = _faults(_LIBRARY)
    assert out["applied"] is True
    # measured: 55 000 faults per step with glibc's defaults, 500 kept
    assert out["faults"] * 10 < system_default["faults"]


def test_the_cli_keeps_freed_memory_for_every_command(system_default):
    out = _faults(_CLI)
    assert out["applied"] is True
    assert out["faults"] * 10 < system_default["faults"]


def test_the_environment_can_leave_the_system_default(system_default):
    out = _faults(_LIBRARY, {"AUTOMTL_KEEP_FREED_MEMORY": "0"})
    assert out["applied"] is False
    assert out["faults"] > system_default["faults"] / 2
