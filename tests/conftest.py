"""Shared fixtures: the real-prototxt corpus in ../shared/prototxt, and the CLI in-process."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

# One thread: the suite's models are small, and a second busy process on a 2-core machine makes
# multi-threaded kernels spin-wait (50× slower); AUTOMTL_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("AUTOMTL_TEST_THREADS", "1")))

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "prototxt"
LONGTAIL = ROOT.parent / "shared" / "prototxt-longtail"  # layer types beyond the core set


def corpus_required() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or \
        os.environ.get("AUTOMTL_REQUIRE_CORPUS") == "1"


def corpus_dir(root: Path = CORPUS) -> Path:
    """The corpus (or the long-tail one), or a skip (a failure in CI, where it must be
    present)."""
    if not root.is_dir():
        message = (f"real-prototxt corpus not found at {root} (it lives in "
                   f"../shared/{root.name})")
        if corpus_required():
            pytest.fail(message + "; CI requires it")
        pytest.skip(message)
    return root


def corpus_files(root: Path = CORPUS) -> list[str]:
    """Corpus file names relative to the corpus, for parametrisation (empty if absent)."""
    if not root.is_dir():
        return ["<corpus missing>"]
    return sorted(str(p.relative_to(root)) for p in root.glob("*/*.prototxt"))


@pytest.fixture
def corpus() -> Path:
    return corpus_dir()


@pytest.fixture
def run_cli(capsys):
    """Run `automtl ARGS...` in-process; returns (exit code, stdout, stderr)."""
    from automtl_cli.cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(autouse=True)
def _same_random_state_for_every_test():
    """Every test starts from one global random state, whatever ran before it: a test's
    outcome must not depend on the order or the subset of tests run."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="torch device for the model tests (cpu, cuda); default cpu")


@pytest.fixture
def device(request):
    name = request.config.getoption("--device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("--device cuda given but no CUDA device is available")
    return torch.device(name)


TINY_EXPERIMENT = """name: "tiny"
task { type: "seg" head { type: LIGHT } }
task { type: "depth" head { type: LIGHT } }
task { type: "normal" head { type: LIGHT } }
data {
  source: SYNTHETIC
  batch_size: 4
  val_batch_size: 8
  synthetic { image_size: 32 train: 16 train1: 16 train2: 16 val: 16 test: 16 }
}
"""


@pytest.fixture(scope="session")
def scene_cache(tmp_path_factory):
    """One synthetic-scene cache for the whole session (scenes are a function of seed, index)."""
    path = tmp_path_factory.mktemp("scene-cache")
    os.environ["AUTOMTL_CACHE"] = str(path)
    return path


@pytest.fixture
def tiny_run(tmp_path, scene_cache):
    """A run directory compiled from the smallest ResNet, with a tiny synthetic experiment."""
    from automtl_cli.cli.main import main

    (tmp_path / "tiny.prototxt").write_text(TINY_EXPERIMENT)
    run = tmp_path / "run"
    assert main(["-q", "compile", str(ROOT / "specs" / "resnet18_w8.prototxt"), "-o", str(run),
                 "--tasks", "seg,depth,normal"]) == 0
    return run


def perturbed_supermodel(graph, space, seed: int = 0):
    """A supermodel whose task copies and task BatchNorms differ from the shared ones, so that
    equivalence tests cannot pass by symmetry."""
    from automtl_cli.compiler.supermodel import SearchBatchNorm, SearchConv, build_supermodel

    model = build_supermodel(graph, space, seed=seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SearchConv):
                m.task_weight.add_(0.05 * torch.randn_like(m.task_weight))
            if isinstance(m, SearchBatchNorm) and m.has_task and m.task_weight is not None:
                m.task_weight.uniform_(0.5, 1.5)
                m.task_bias.normal_()
    return model
