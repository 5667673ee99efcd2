"""Property: any mutant of a file automtl reads is read or refused as documented, never a crash.

Prototxt files: a mutant either compiles or fails with one `error:` line (65). Mutations are
what a hand-edited file suffers: a deleted line, a changed number, a truncation. Never a
traceback, never another exit code, never a hang. Hypothesis runs without a deadline (a busy
machine would miss one) and derandomised, so the suite sees the same mutants every time;
AUTOMTL_EXPLORE=1 draws fresh ones. Plan files, experiment files and checkpoints (truncated)
get seeded cases below, each through the command that reads it.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from automtl_cli.cli.main import main

from conftest import corpus_dir

_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?(?![\w.])")


def _files() -> list[Path]:
    return sorted(corpus_dir().glob("*/*.prototxt"))


@st.composite
def mutants(draw) -> tuple[str, str]:
    path = draw(st.sampled_from(_files()))
    text = path.read_text()
    kind = draw(st.sampled_from(["delete-line", "change-number", "truncate"]))
    if kind == "delete-line":
        lines = text.splitlines(keepends=True)
        i = draw(st.integers(0, len(lines) - 1))
        text = "".join(lines[:i] + lines[i + 1:])
    elif kind == "change-number":
        spans = [m.span() for m in _NUMBER.finditer(text)]
        start, end = draw(st.sampled_from(spans))
        value = draw(st.one_of(st.sampled_from(["0", "-1", "1", "2", "3", "7", "1.5", "-0.5"]),
                               st.integers(-10, 10**12).map(str)))
        text = text[:start] + value + text[end:]
    else:
        text = text[:draw(st.integers(0, len(text)))]
    return path.name, text


@settings(max_examples=int(os.environ.get("AUTOMTL_MUTANTS", "120")), deadline=None,
          derandomize=os.environ.get("AUTOMTL_EXPLORE") != "1", database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutants())
def test_mutant_compiles_or_fails_cleanly(mutant):
    name, text = mutant
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["-q", "compile", str(path), "-o", tmp, "--input-shape", "2,3,64,64"]
                        if "train_val" in name else ["-q", "compile", str(path), "-o", tmp])
        stderr = err.getvalue()
        assert "Traceback" not in stderr
        assert code in (0, 65), stderr
        if code == 65:
            lines = [x for x in stderr.splitlines() if x.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: "), stderr
        else:
            assert (Path(tmp) / "supermodel.pt").exists()


# --- The other files a command reads: plan files, experiment files, checkpoints. ---------------
#
# Seeded cases (the same every run; AUTOMTL_FILE_MUTANTS sets how many per kind): each mutant is
# handed to the command that reads it, which must succeed (a mutant can still be valid) or exit
# with a documented code and one `error:` line; never exit 70, never a traceback.

FILE_MUTANTS = int(os.environ.get("AUTOMTL_FILE_MUTANTS", "12"))
_JUNK = ['"', "{", "}", "[", "]", ",", ":", "#", "\\", "\n", " ", "x", "0", "-1", "1e99", "null",
         "\x00", "\ufeff", "\xe9"]
_JSON_VALUES = ["null", "[]", "{}", "1", "-1", '"x"', '["shared"]', "true", '{"seg": "shared"}',
                '"SHARED"', "1e999"]
_DOCUMENTED = (0, 65, 66)  # success (still valid), bad input, missing input


def _mutate_text(text: str, rng: random.Random, values: list[str]) -> tuple[str, bytes]:
    """One hand-edit or accident, and which: a line deleted, a value replaced, junk typed, a
    truncation, a byte-order mark (which changes nothing), binary bytes."""
    kind = rng.choice(["delete-line", "value", "number", "junk", "truncate", "bom", "binary"])
    if kind == "delete-line":
        lines = text.splitlines(keepends=True)
        i = rng.randrange(len(lines))
        text = "".join(lines[:i] + lines[i + 1:])
    elif kind == "value":
        spans = [m.span() for m in re.finditer(r'"[^"\n]*"|\b(?:true|false)\b|-?\d+', text)]
        start, end = rng.choice(spans)
        text = text[:start] + rng.choice(values) + text[end:]
    elif kind == "number":
        spans = [m.span() for m in _NUMBER.finditer(text)]
        start, end = rng.choice(spans)
        value = rng.choice(["0", "-1", "3", "1.5", "-0.5", str(10 ** rng.randrange(1, 13))])
        text = text[:start] + value + text[end:]
    elif kind == "junk":
        for _ in range(rng.randrange(1, 4)):
            i = rng.randrange(len(text) + 1)
            text = text[:i] + rng.choice(_JUNK) + text[i:]
    elif kind == "truncate":
        text = text[:rng.randrange(len(text))]
    elif kind == "bom":
        return kind, b"\xef\xbb\xbf" + text.encode("utf-8")
    else:
        data = bytearray(text.encode("utf-8"))
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(128, 256)
        return kind, bytes(data)
    return kind, text.encode("utf-8")


def _clean_exit(args: list[str]) -> tuple[int, str]:
    """Run the CLI in-process; assert it ended as documented; (code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["-q", *args])
    stderr = err.getvalue()
    assert "Traceback" not in stderr, stderr
    assert code in _DOCUMENTED, (code, stderr)
    if code:
        lines = [x for x in stderr.splitlines() if x.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return code, stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory, scene_cache) -> dict[str, Path]:
    """`compiled`: compile only (an experiment file is what derive then reads); `derived`:
    compiled, searched (a few steps, step checkpoints kept), derived."""
    from conftest import ROOT, TINY_EXPERIMENT

    root = tmp_path_factory.mktemp("mutants")
    experiment = root / "tiny.prototxt"
    experiment.write_text(TINY_EXPERIMENT)
    spec = str(ROOT / "specs" / "resnet18_w8.prototxt")
    out = {"experiment": experiment}
    for name in ("compiled", "derived"):
        out[name] = root / name
        assert main(["-q", "compile", spec, "-o", str(out[name]), "--tasks",
                     "seg,depth,normal"]) == 0
    run = str(out["derived"])
    assert main(["-q", "search", run, "--experiment", str(experiment), "--warmup-iters", "1",
                 "--iters", "2", "--checkpoint-every", "1"]) == 0
    assert main(["-q", "derive", run, "--mode", "argmax"]) == 0
    return out


@pytest.mark.parametrize("seed", range(FILE_MUTANTS))
def test_a_mutated_plan_file_derives_or_fails_cleanly(runs, tmp_path, seed):
    rng = random.Random(f"plan-{seed}")
    plan = (runs["derived"] / "derived" / "plan.json").read_text()
    path = tmp_path / "plan.json"
    kind, data = _mutate_text(plan, rng, _JSON_VALUES)
    path.write_bytes(data)
    code, stderr = _clean_exit(["derive", str(runs["derived"]), "--plan", str(path)])
    assert code == 0 or kind != "bom", stderr


@pytest.mark.parametrize("seed", range(FILE_MUTANTS))
def test_a_mutated_experiment_file_is_read_or_refused_cleanly(runs, tmp_path, seed):
    rng = random.Random(f"experiment-{seed}")
    path = tmp_path / "experiment.prototxt"
    kind, data = _mutate_text(runs["experiment"].read_text(), rng,
                              ['"seg"', '"depth"', '"nope"', "LIGHT", "ASPP", "NYUV2",
                               "SYNTHETIC", "0", "-1", '""', "{", "1.5"])
    path.write_bytes(data)
    code, stderr = _clean_exit(["derive", str(runs["compiled"]), "--plan", "shared",
                                "--experiment", str(path)])
    assert code == 0 or kind != "bom", stderr


# (file in the run, the command that reads it); {run} and {file} are filled in.
_READERS = [
    ("supermodel.pt", ["inspect", "{file}"]),
    ("supermodel.pt", ["derive", "{run}", "--plan", "shared"]),
    ("search/last.pt", ["derive", "{run}", "--mode", "argmax"]),
    ("search/last.pt", ["search", "{run}", "--resume", "--iters", "3", "--experiment",
                        "{experiment}"]),
    ("search/step-2.pt", ["inspect", "{file}"]),
    ("derived/model.pt", ["finetune", "{run}", "--iters", "1"]),
    ("derived/model.pt", ["eval", "{file}", "--split", "val"]),
]


@pytest.mark.parametrize("reader", _READERS, ids=[f"{f}-{a[0]}" for f, a in _READERS])
@pytest.mark.parametrize("where", ["empty", "header", "random", "last-byte"])
def test_a_truncated_checkpoint_is_refused_cleanly(runs, tmp_path, reader, where):
    name, args = reader
    run = tmp_path / "run"
    shutil.copytree(runs["derived"], run, copy_function=os.link,
                    ignore=shutil.ignore_patterns(".automtl.lock"))
    path = run / name
    data = path.read_bytes()
    rng = random.Random(f"{name}-{where}")
    cut = {"empty": 0, "header": rng.randrange(1, 64), "random": rng.randrange(64, len(data)),
           "last-byte": len(data) - 1}[where]
    path.unlink()  # a hard link to the shared run's file (and last.pt to a step file)
    path.write_bytes(data[:cut])
    code, stderr = _clean_exit([a.format(run=run, file=path, experiment=runs["experiment"])
                                for a in args])
    assert code == 65, stderr
    assert str(path) in stderr, stderr


@pytest.mark.parametrize("seed", range(max(FILE_MUTANTS // 3, 1)))
def test_a_plan_edited_in_place_is_read_or_refused(runs, tmp_path, seed):
    """finetune trains derived/model.pt; an edit of derived/plan.json beside it must not be
    silently ignored: it is refused (or changes nothing the network depends on)."""
    run = tmp_path / "run"
    shutil.copytree(runs["derived"], run, copy_function=os.link,
                    ignore=shutil.ignore_patterns(".automtl.lock"))
    path = run / "derived" / "plan.json"
    text = path.read_text()
    path.unlink()
    path.write_bytes(_mutate_text(text, random.Random(f"in-place-{seed}"), _JSON_VALUES)[1])
    _clean_exit(["finetune", str(run), "--iters", "1"])
