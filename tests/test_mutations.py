"""Property: any mutant of a real prototxt either compiles or fails with one `error:` line (65).

Mutations are what a hand-edited file suffers: a deleted line, a changed number, a truncation.
Never a traceback, never another exit code, never a hang. Hypothesis runs without a
deadline (a busy machine would miss one) and derandomised, so the suite sees the same mutants
every time; AUTOMTL_EXPLORE=1 draws fresh ones.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from pathlib import Path

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
