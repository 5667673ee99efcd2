"""Outputs that cannot be written: exit 73 with one line naming the path, before the work where
it can be known, and the last good artifact intact where it cannot (a full disk)."""

from __future__ import annotations

import os

import pytest
import torch

from conftest import ROOT

BACKBONE = ROOT / "specs" / "resnet18_w8.prototxt"
SEARCH = ["--warmup-iters", "2", "--iters", "2", "--policy-steps", "1", "--weight-steps", "1"]


def _search(run_cli, run, *args):
    return run_cli("-q", "search", run, "--experiment", run.parent / "tiny.prototxt", *SEARCH,
                   *args)


def _one_line_73(rc: int, err: str, path) -> None:
    assert rc == 73, err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err


def test_compile_under_a_regular_file(run_cli, tmp_path):
    (tmp_path / "file").write_text("x")
    rc, _, err = run_cli("-q", "compile", BACKBONE, "-o", tmp_path / "file" / "run")
    _one_line_73(rc, err, tmp_path / "file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_compile_into_a_read_only_directory(run_cli, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        rc, _, err = run_cli("-q", "compile", BACKBONE, "-o", ro)
    finally:
        ro.chmod(0o755)
    _one_line_73(rc, err, ro)


@pytest.mark.parametrize("stage", ["search", "derived", "finetune"])
def test_a_stage_directory_that_is_a_file(tiny_run, run_cli, stage):
    if stage != "search":
        assert _search(run_cli, tiny_run)[0] == 0
    if stage == "finetune":
        assert run_cli("-q", "derive", tiny_run, "--mode", "argmax")[0] == 0
    blocker = tiny_run / stage
    if blocker.is_dir():
        for p in sorted(blocker.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        blocker.rmdir()
    blocker.write_text("in the way")
    command = {"search": lambda: _search(run_cli, tiny_run),
               "derived": lambda: run_cli("-q", "derive", tiny_run, "--mode", "argmax"),
               "finetune": lambda: run_cli("-q", "finetune", tiny_run, "--iters", "2")}[stage]
    rc, _, err = command()
    _one_line_73(rc, err, blocker)


def test_final_model_path_that_is_a_directory_is_refused_before_training(tiny_run, run_cli):
    assert _search(run_cli, tiny_run)[0] == 0
    assert run_cli("-q", "derive", tiny_run, "--mode", "argmax")[0] == 0
    (tiny_run / "final.pt").mkdir()
    rc, _, err = run_cli("-q", "finetune", tiny_run, "--iters", "2")
    _one_line_73(rc, err, tiny_run / "final.pt")
    assert not (tiny_run / "finetune" / "last.pt").exists()  # nothing was trained


def test_a_full_disk_keeps_the_last_good_checkpoint(tiny_run, run_cli, monkeypatch):
    """The second checkpoint's write fails as torch reports a full disk: exit 73, and last.pt
    is still the first, whole checkpoint."""
    assert _search(run_cli, tiny_run, "--checkpoint-every", "2")[0] == 0
    first = torch.load(tiny_run / "search" / "last.pt", weights_only=True)
    real = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "step-" in str(f) or ".step-" in str(f):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter "
                               "failed writing file data/0: file write failed")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    rc, _, err = _search(run_cli, tiny_run, "--checkpoint-every", "2", "--iters", "4",
                         "--resume")
    assert rc == 73, err
    assert err.count("\n") == 1 and "cannot write" in err and "torch.save failed" in err
    monkeypatch.setattr(torch, "save", real)
    kept = torch.load(tiny_run / "search" / "last.pt", weights_only=True)
    assert kept["step"] == first["step"] and torch.equal(kept["policy_logits"],
                                                         first["policy_logits"])
    assert not [p for p in (tiny_run / "search").iterdir() if p.name.endswith(".tmp")]


class Payload:
    """Stands for whatever code a malicious checkpoint would run when unpickled."""


def test_a_refused_checkpoint_says_what_and_never_suggests_unsafe_loading(tiny_run, run_cli):
    path = tiny_run / "search" / "last.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": "search-checkpoint", "format_version": 2, "x": Payload()}, path)
    rc, _, err = run_cli("-q", "derive", tiny_run, "--mode", "argmax")
    assert rc == 65, err
    assert "Payload" in err and "weights_only" not in err and err.count("\n") == 1
    torch.save({"kind": "search-checkpoint", "format_version": "two"}, path)
    rc, _, err = run_cli("-q", "derive", tiny_run, "--mode", "argmax")
    assert rc == 65 and "no valid format_version" in err, err


def test_a_run_directory_written_by_another_process_is_refused(tiny_run):
    """While one process holds RUN's lock, another's stage exits 73 naming the holder; once
    the holder is gone (however it ended), the lock is free again."""
    import subprocess
    import sys

    from automtl_cli.artifacts.lock import run_lock

    cmd = [sys.executable, "-m", "automtl_cli", "-q", "derive", str(tiny_run), "--plan",
           "shared", "--experiment", str(tiny_run.parent / "tiny.prototxt")]
    with run_lock(tiny_run):
        busy = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert busy.returncode == 73, busy.stderr
    assert "another automtl process is writing it" in busy.stderr
    assert f"pid {os.getpid()}" in busy.stderr and busy.stderr.count("\n") == 1
    free = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert free.returncode == 0, free.stderr
