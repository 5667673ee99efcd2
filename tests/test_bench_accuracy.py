"""scripts/bench_accuracy.py: Δ_T per seed against that seed's single-task cell, the pooled
table, and the ablation picture, on made-up cells (the training itself is tested elsewhere)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from automtl_cli.experiment import build_stage_experiment
from automtl_cli.tasks import build_tasks

from conftest import ROOT


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_accuracy",
                                                  ROOT / "scripts" / "bench_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cell(tasks, scale: float, params: int, updates: int = 600, init: str = "scratch"):
    """A result whose every metric is the single-task one's (0.5) improved by `scale` − 1."""
    metrics = {}
    for t in tasks:
        metrics[t.name] = {m: (scale if better else 2 - scale) * 0.5
                           for m, better in t.higher_is_better.items()}
    return {"metrics": {"val": metrics, "test": metrics}, "params": {"total": params},
            "flops": {"all_tasks_one_pass": 5e8}, "seconds": 60.0,
            "budget": {"weight_updates": updates, "finetune_iters": updates, "init": init}}


def test_deltas_tables_and_picture(bench, tmp_path):
    tasks = build_tasks(build_stage_experiment(None, "nyu3", None))
    cells = {seed: {"single-task": _cell(tasks, 1.0, 3_000_000),
                    "hard sharing": _cell(tasks, 0.99, 1_600_000),
                    "random 0": _cell(tasks, 0.98, 2_000_000),
                    "random 1": _cell(tasks, 0.97, 2_100_000),
                    "AutoMTL": _cell(tasks, 1.02 + 0.01 * seed, 2_000_000, 400, "search")}
             for seed in range(3)}
    bench.with_deltas(cells, tasks)
    assert cells[0]["single-task"]["delta"]["test"]["mean"] == pytest.approx(0.0)
    assert cells[0]["AutoMTL"]["delta"]["test"]["mean"] == pytest.approx(2.0, abs=1e-3)
    assert cells[2]["AutoMTL"]["delta"]["test"]["mean"] == pytest.approx(4.0, abs=1e-3)
    assert cells[1]["hard sharing"]["delta"]["test"]["mean"] < 0
    table = bench.aggregate(cells, tasks)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert list(rows) == ["single-task", "hard sharing", "random plans", "AutoMTL"]
    assert "| 6 |" in rows["random plans"]  # two plans × three seeds, pooled
    assert "3 ± 1" in rows["AutoMTL"]  # Δ_T mean ± sample std over the seeds (2, 3, 4)
    assert "400 (search)" in rows["AutoMTL"] and "600 (scratch)" in rows["single-task"]
    pytest.importorskip("matplotlib")
    assert bench.plot({"nyu3": cells}, tmp_path / "ablation.png")
    assert (tmp_path / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_cell_of_another_configuration_is_refused(bench, tmp_path):
    from automtl_cli.engine.finetune import FinetuneConfig
    from automtl_cli.engine.search import SearchConfig
    from automtl_cli.experiment import DataSource

    search = SearchConfig.defaults_for(DataSource.SYNTHETIC)
    finetune = FinetuneConfig.defaults_for(DataSource.SYNTHETIC, init="search")
    ours = bench.fingerprint("specs/resnet18_w16.prototxt", "equal", search, finetune)
    path = tmp_path / "AutoMTL.json"
    path.write_text(json.dumps({"config": ours, "metrics": {}}))
    assert bench.load_cell(path, ours)["config"] == ours
    longer = bench.fingerprint("specs/resnet18_w16.prototxt", "equal", search,
                               FinetuneConfig.defaults_for(DataSource.SYNTHETIC, iters=999))
    with pytest.raises(SystemExit, match="differs in finetune"):
        bench.load_cell(path, longer)
    path.write_text(json.dumps({"metrics": {}}))  # no record of its configuration
    with pytest.raises(SystemExit, match="another configuration"):
        bench.load_cell(path, ours)


def test_plans_compared_per_seed_and_across_seeds(tmp_path, capsys):
    """scripts/compare_plans.py: B's plan against A's of the same seed, and A's seeds against
    each other (the spread a change is judged by)."""
    spec = importlib.util.spec_from_file_location("compare_plans",
                                                  ROOT / "scripts" / "compare_plans.py")
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    plans = {("A", 0): "SSSS", ("A", 1): "SSTT", ("B", 0): "SSSK", ("B", 1): "SSTT"}
    names = {"S": "shared", "T": "specific", "K": "skip"}
    for (side, seed), plan in plans.items():
        path = tmp_path / side / "nyu3" / f"seed-{seed}" / "AutoMTL.json"
        path.parent.mkdir(parents=True)
        choices = {f"conv{i}": {"seg": names[c], "depth": "shared"} for i, c in enumerate(plan)}
        config = {"search": {"iters": 9, "precision": side}, "budget": "equal"}
        path.write_text(json.dumps({"choices": choices, "fraction_shared": 0.5, "config": config,
                                    "metrics": {"test": {"seg": {"mIoU": 0.4 + seed / 10}}}}))
    assert compare.main([str(tmp_path / "A"), str(tmp_path / "B")]) == 0
    out = capsys.readouterr().out
    assert "| nyu3 | 0 | 0.875 |" in out and "| nyu3 | 1 | 1.000 |" in out  # 7/8, 8/8
    assert "agree on 0.75 ± 0 of the choices (1 pairs)" in out  # SSSS vs SSTT: 6/8
    assert "A (2 seeds), test: sharing 0.5 ± 0, seg mIoU 0.45 ± 0.071" in out
    cell = tmp_path / "B" / "nyu3" / "seed-0" / "AutoMTL.json"
    other = json.loads(cell.read_text())
    other["config"]["search"]["iters"] = 10
    cell.write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="other configurations"):
        compare.main([str(tmp_path / "A"), str(tmp_path / "B")])
    del other["choices"]
    other["config"]["search"]["iters"] = 9
    cell.write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="no choices of its plan"):
        compare.main([str(tmp_path / "A"), str(tmp_path / "B")])
