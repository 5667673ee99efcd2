"""`automtl data preview`: the picture, its JSON summary, and the exit codes of bad data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from automtl_cli.cli.main import main
from automtl_cli.data.preview import _palette

from conftest_data import write_cityscapes, write_nyuv2, write_taskonomy

TILE, GAP, HEADER = 160, 2, 18


@pytest.fixture
def run(capsys):
    def call(*args) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return call


def test_default_preview_shows_every_synthetic_label(run, tmp_path):
    out = tmp_path / "preview.png"
    code, stdout, _ = run("data", "preview", "--cache-dir", tmp_path / "cache", "-n", "2",
                          "-o", out, "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["tasks"] == ["seg", "depth", "normal", "edge", "edge2d", "keypoint"]
    assert summary["samples"] == 2 and summary["split"] == "val"
    image = np.array(Image.open(out).convert("RGB"))
    columns = 1 + len(summary["tasks"])
    assert image.shape == (HEADER + 2 * (TILE + GAP) + HEADER, columns * (TILE + GAP) - GAP, 3)
    row = image[HEADER:HEADER + TILE]
    tiles = [row[:, c * (TILE + GAP):c * (TILE + GAP) + TILE] for c in range(columns)]
    assert tiles[0].std() > 10  # a rendered scene, not a blank tile
    seg_colours = {tuple(p) for p in tiles[1].reshape(-1, 3)}
    assert seg_colours <= {tuple(int(v) for v in c) for c in _palette(6)}
    assert len(seg_colours) >= 3  # floor, wall and at least one object
    normal = tiles[3].reshape(-1, 3).astype(int)
    assert np.median(normal[:, 2]) < 128  # floor and wall face the camera: z < 0
    edges = tiles[4]
    assert set(np.unique(edges)) <= {0, 255} and (edges == 255).any()
    assert (tiles[6].astype(int) - tiles[0].astype(int)).any()  # keypoint overlay differs


def test_preview_of_chosen_tasks_and_seed(run, tmp_path):
    args = ("data", "preview", "--cache-dir", tmp_path / "cache", "-n", "1",
            "--experiment", "specs/experiments/synthetic_taskonomy5.prototxt")
    code, stdout, _ = run(*args, "--tasks", "seg,keypoint", "--seed", "3", "-o",
                          tmp_path / "a.png", "--json")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["tasks"] == ["seg", "keypoint"] and summary["seed"] == 3
    code, _, _ = run(*args, "--tasks", "seg,keypoint", "--seed", "4", "-o", tmp_path / "b.png")
    a = np.array(Image.open(tmp_path / "a.png"))
    b = np.array(Image.open(tmp_path / "b.png"))
    assert code == 0 and a.shape == b.shape and not np.array_equal(a, b)


def test_preview_of_a_real_layout(run, tmp_path):
    root = write_nyuv2(tmp_path / "nyu")
    code, stdout, _ = run("data", "preview", "--data", f"nyuv2:{root}", "-o",
                          tmp_path / "nyu.png", "--json", "--split", "train")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["tasks"] == ["seg", "normal", "depth"] and summary["samples"] == 3
    assert Image.open(tmp_path / "nyu.png").size == (4 * (TILE + GAP) - GAP,
                                                     HEADER + 3 * (TILE + GAP))


@pytest.mark.parametrize(("source", "writer", "tasks"), [
    ("cityscapes", write_cityscapes, ["seg", "depth"]),
    ("taskonomy", write_taskonomy, ["seg", "normal", "depth", "keypoint", "edge2d"]),
])
def test_preview_of_the_other_layouts(run, tmp_path, source, writer, tasks):
    root = writer(tmp_path / source)
    out = tmp_path / f"{source}.png"
    code, stdout, _ = run("data", "preview", "--data", f"{source}:{root}", "-o", out, "--json",
                          "--split", "test", "-n", "1", "--seed", "0")
    assert code == 0
    assert json.loads(stdout)["tasks"] == tasks
    image = np.array(Image.open(out).convert("RGB"))
    assert image.shape[1] == (1 + len(tasks)) * (TILE + GAP) - GAP
    assert image[HEADER:].std() > 10


def test_bad_data_exit_codes(run, tmp_path):
    code, _, err = run("data", "preview", "--data", f"nyuv2:{tmp_path / 'nowhere'}",
                       "-o", tmp_path / "x.png")
    assert code == 66 and "root not found" in err
    root = write_nyuv2(tmp_path / "nyu")
    entry = json.loads((root / "nyu_v2_3task.json").read_text())["test"][0]
    (root / entry[3]).write_bytes(b"garbage")
    code, _, err = run("data", "preview", "--data", f"nyuv2:{root}", "-o", tmp_path / "x.png")
    assert code == 65
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and entry[3] in errors[0]
    assert not (tmp_path / "x.png").exists()
    for bad in (["--data", "imagenet"], ["--tasks", "seg,nope"],
                ["--data", f"cityscapes:{root}", "--tasks", "keypoint"]):
        code, _, err = run("data", "preview", *bad, "-o", tmp_path / "x.png")
        assert code == 65, bad
        assert err.count("\n") == 1


def test_commands_start_without_pillow_and_preview_names_the_extra(tmp_path):
    """A core-only install has no Pillow: every command still starts, and the one that needs
    it exits 69 with the line that installs it."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['PIL'] = None; from automtl_cli.cli.main import main; "
            "sys.exit(main(sys.argv[1:]))")
    version = subprocess.run([sys.executable, "-c", code, "--version"], capture_output=True,
                             text=True, timeout=300)
    assert version.returncode == 0, version.stderr
    preview = subprocess.run([sys.executable, "-c", code, "-q", "data", "preview", "-o",
                              str(tmp_path / "p.png"), "-n", "1"], capture_output=True,
                             text=True, timeout=300)
    assert preview.returncode == 69, preview.stderr
    assert "pip install 'automtl[images]'" in preview.stderr
