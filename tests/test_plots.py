"""The pictures (plots.py): each draws a PNG from plain data, and a missing matplotlib is exit 69
with the install line, or for `run` one line saying there is no picture."""

from __future__ import annotations

import json
import struct
import sys

import numpy as np
import pytest

from automtl_cli.errors import MissingDependency
from automtl_cli.experiment import default_experiment
from automtl_cli.tasks import build_tasks

PNG = b"\x89PNG\r\n\x1a\n"


def _size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG
    return struct.unpack(">II", data[16:24])


def _results() -> dict:
    tasks = build_tasks(default_experiment())
    out = {}
    for k, (method, delta, params) in enumerate([("single-task", None, 2.1e6),
                                                  ("hard sharing", 0.8, 0.7e6),
                                                  ("random 0", -1.5, 1.4e6),
                                                  ("AutoMTL", 2.8, 1.4e6)]):
        metrics = {t.name: {m: 0.3 + 0.01 * k for m in t.delta_metrics} for t in tasks}
        out[method] = {"metrics": {"test": metrics}, "params": {"total": params},
                       **({"delta": {"test": {"mean": delta}}} if delta is not None else {})}
    return out


@pytest.fixture
def no_matplotlib(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were missing


def test_policy_plot_has_a_row_per_node_and_a_column_per_task(tmp_path):
    pytest.importorskip("matplotlib")
    from automtl_cli.plots import plot_policy

    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1, 1], size=(20, 3))
    small = plot_policy(probs[:4, :1], [f"n{i}" for i in range(4)], ["seg"], tmp_path / "a.png")
    big = plot_policy(probs, [f"layer{i}" for i in range(20)], ["seg", "depth", "normal"],
                      tmp_path / "b.png")
    (w1, h1), (w2, h2) = _size(small), _size(big)
    assert w2 > w1 and h2 > h1  # grows with the tasks and with the nodes


def test_search_log_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from automtl_cli.plots import plot_search_log

    records = [{"step": s, "stage": "warmup" if s <= 4 else "search",
                "loss": {"seg": 2 / s, "depth": 1 / s}, "tau": 5 * 0.9 ** s,
                "sharing": 0.5, "entropy": 1.0 - 0.02 * s, "decided": 0.4 + 0.01 * s}
               for s in range(1, 21)]
    assert _size(plot_search_log(records, tmp_path / "log.png"))[0] > 500


def test_results_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from automtl_cli.plots import plot_results

    path = plot_results(_results(), build_tasks(default_experiment()), tmp_path / "results.png")
    assert _size(path)[0] > 800


def test_without_matplotlib_a_plot_is_exit_69_and_run_says_it_in_one_line(tmp_path,
                                                                           no_matplotlib):
    from automtl_cli.plots import plot_policy
    from automtl_cli.stages.run import _draw_results

    with pytest.raises(MissingDependency, match=r"pip install 'automtl\[plot\]'") as e:
        plot_policy(np.full((2, 1, 3), 1 / 3), ["a", "b"], ["seg"], tmp_path / "p.png")
    assert e.value.exit_code == 69
    said: list[str] = []
    assert _draw_results(_results(), build_tasks(default_experiment()),
                         tmp_path / "results.png", said.append) is None
    assert len(said) == 1 and "results.png" in said[0] and "automtl[plot]" in said[0]
    assert not (tmp_path / "results.png").exists()


def test_inspect_reads_a_search_log_and_names_a_broken_line(tmp_path, run_cli):
    log = tmp_path / "log.jsonl"
    lines = [{"step": 2, "stage": "warmup", "loss": {"seg": 1.5}, "tau": 5.0, "sharing": 0.5,
              "entropy": 1.09, "decided": 0.34}]
    log.write_text("".join(json.dumps(r) + "\n" for r in lines))
    rc, out, err = run_cli("inspect", log)
    assert rc == 0, err
    assert "1 lines up to step 2" in out and "seg 1.5" in out
    rc, _, err = run_cli("inspect", tmp_path / "model.prototxt", "--plot", tmp_path / "x.png")
    assert rc == 2 and "--plot" in err
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(lines[0]) + "\n{not json\n")
    rc, _, err = run_cli("inspect", broken)
    assert rc == 65 and f"{broken}:2:" in err
    pytest.importorskip("matplotlib")
    rc, out, err = run_cli("inspect", log, "--plot", tmp_path / "log.png")
    assert rc == 0, err
    assert (tmp_path / "log.png").read_bytes()[:8] == PNG
