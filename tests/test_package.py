"""Installable like any Python tool: start-up without torch, built-in backbones by name, and a
wheel that works with the core dependencies only (issue 17)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from automtl_cli import __version__
from automtl_cli.bundled import backbone_names, bundled_backbone, resolve_backbone, specs_dir
from automtl_cli.cli.main import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "PIL", "matplotlib", "onnx", "numpy")

_PROBE = """
import sys
from automtl_cli.cli.main import main
code = main(sys.argv[1:])
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def _probe(*args: str) -> subprocess.CompletedProcess:
    """`automtl ARGS` in a fresh interpreter, reporting which heavy modules it imported."""
    return subprocess.run([sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("args", [("--version",), ("--help",), *((c, "--help") for c in COMMANDS),
                                  ("data", "preview", "--help")],
                         ids=lambda a: " ".join(a))
def test_help_and_version_import_nothing_heavy(args):
    done = _probe(*args)
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout or "version" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "HEAVY=", done.stderr


def test_a_command_that_works_does_import_torch():
    """The probe can fail: a command that computes imports torch, and the probe sees it."""
    done = _probe("inspect", "--list", "--json")
    assert done.returncode == 0, done.stderr
    assert "torch" in done.stderr.strip().splitlines()[-1]


def test_bundled_specs_are_package_data_and_the_root_link_agrees():
    assert specs_dir() == ROOT / "automtl_cli" / "specs"
    assert (ROOT / "specs").resolve() == specs_dir().resolve()
    assert {"resnet34", "resnet18_w16", "mobilenetv2"} <= set(backbone_names())
    assert (specs_dir() / "experiments" / "synthetic.prototxt").is_file()
    assert bundled_backbone("resnet34.prototxt") == specs_dir() / "resnet34.prototxt"
    assert bundled_backbone("nosuch") is None and bundled_backbone("specs/resnet34") is None


def test_a_name_resolves_to_the_bundled_backbone_only_where_no_file_exists(tmp_path,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    path, note = resolve_backbone("resnet34.prototxt")
    assert path == str(specs_dir() / "resnet34.prototxt") and "built-in" in note
    (tmp_path / "resnet34.prototxt").write_text("# mine\n")
    assert resolve_backbone("resnet34.prototxt") == ("resnet34.prototxt", None)
    assert resolve_backbone("model.py:Net") == ("model.py:Net", None)


def test_compile_by_name_in_an_empty_directory(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli("compile", "resnet18_w8", "--json")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["name"] == "resnet18_w8" and summary["searchable"] == 20
    assert "built-in backbone resnet18_w8" in summary["notes"][0]
    assert "built-in backbone" in err
    assert (tmp_path / "supermodel.pt").is_file()
    # a file of that name here wins over the bundled one
    shutil.copy(specs_dir() / "resnet34_w8.prototxt", tmp_path / "resnet18_w8.prototxt")
    rc, out, err = run_cli("compile", "resnet18_w8.prototxt", "-o", "mine", "--json")
    assert rc == 0, err
    assert json.loads(out)["name"] == "resnet34_w8" and "built-in" not in err
    rc, _, err = run_cli("compile", "nosuch.prototxt")
    assert rc == 66 and "nosuch.prototxt" in err


def test_inspect_list(run_cli):
    rc, out, err = run_cli("inspect", "--list", "--json")
    assert rc == 0, err
    rows = {r["name"]: r for r in json.loads(out)["backbones"]}
    assert set(rows) == set(backbone_names())
    assert rows["resnet34"]["params"] == 21_284_672 and rows["resnet34"]["searchable"] == 36
    rc, out, _ = run_cli("inspect", "--list")
    assert rc == 0 and "resnet34" in out and "21,284,672" in out
    rc, _, err = run_cli("inspect")
    assert rc == 2 and "--list" in err


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / "python"


@pytest.mark.slow
def test_the_wheel_installs_and_runs_with_the_core_dependencies_only(tmp_path, scene_cache):
    """Build the wheel from a copy of the sources, install it into a fresh virtual environment
    (pip resolves the declared dependencies: the local wheel cache and indexes here, the
    package index in CI), and use it from an empty directory as a new user would."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "automtl_cli", src / "automtl_cli",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    pip_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip_env.pop("PYTHONPATH", None)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                            str(dist), str(src)], capture_output=True, text=True, timeout=600,
                           env=pip_env)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel, = dist.glob("automtl-*.whl")
    venv = tmp_path / "venv"
    try:
        _install_and_use(wheel, venv, tmp_path, scene_cache, pip_env)
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # about 1 GB: not kept with pytest's tmp dirs


def _install_and_use(wheel: Path, venv: Path, tmp_path: Path, scene_cache: Path,
                     pip_env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = _venv_python(venv)
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)],
                               capture_output=True, text=True, timeout=900, env=pip_env)
    assert installed.returncode == 0, installed.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"],
                            capture_output=True, text=True, check=True, env=pip_env).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert {"automtl", "torch", "protobuf", "click", "numpy", "tqdm"} <= names
    assert not names & {"pillow", "matplotlib", "onnx", "onnxruntime", "safetensors"}

    empty = tmp_path / "empty"
    empty.mkdir()
    automtl = python.parent / "automtl"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(AUTOMTL_CACHE=str(scene_cache), OMP_NUM_THREADS="1")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(automtl), *args], cwd=empty, capture_output=True, text=True,
                              timeout=900, env=env)

    done = cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"automtl, version {__version__}"
    done = cli("compile", "resnet34.prototxt", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["name"] == "resnet34" and summary["searchable"] == 36
    assert "site-packages" in summary["file"] and "built-in backbone" in summary["notes"][0]
    done = cli("search", "--tasks", "seg,depth", "--iters", "2", "--warmup-iters", "1")
    assert done.returncode == 0, done.stderr
    assert (empty / "search" / "last.pt").is_file() and "searched 3 steps" in done.stdout
    done = cli("data", "preview", "-o", "p.png")
    assert done.returncode == 69 and not (empty / "p.png").exists()
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "pip install 'automtl[images]'" in done.stderr and "Traceback" not in done.stderr
    done = cli("run", "--help")
    assert done.returncode == 0 and "Usage: automtl run" in done.stdout


def test_a_training_loop_says_once_how_long_it_will_take(tiny_run, run_cli):
    """`run` and every stage say where they are: one line per loop, once its first steps are
    timed (a log line off a terminal, where no progress bar is drawn); nothing with -q."""
    experiment = tiny_run.parent / "tiny.prototxt"
    rc, _, err = run_cli("search", tiny_run, "--experiment", experiment, "--warmup-iters", "2",
                         "--iters", "4")
    assert rc == 0, err
    said = [line for line in err.splitlines() if line.startswith("search: ")]
    assert len(said) == 1, err
    assert said[0].startswith("search: 6 steps, about ") and "over the first 3)" in said[0]
    rc, _, err = run_cli("-q", "search", tiny_run, "--experiment", experiment,
                         "--warmup-iters", "2", "--iters", "4", "--seed", "1")
    assert rc == 0 and "steps, about" not in err
