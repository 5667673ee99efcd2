"""`automtl finetune`, `eval` and `run` through the CLI on a tiny backbone and tiny scenes."""

from __future__ import annotations

import json

import torch

from conftest import ROOT

FT = ["--iters", "6", "--checkpoint-every", "3", "--log-every", "3"]


def _derive(run_cli, run, *args):
    rc, _, err = run_cli("-q", "derive", run, "--experiment", run.parent / "tiny.prototxt",
                         *args)
    assert rc == 0, err


def test_finetune_writes_final_model_and_metrics(tiny_run, run_cli):
    _derive(run_cli, tiny_run, "--plan", "shared")
    rc, out, err = run_cli("-q", "finetune", tiny_run, *FT, "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert result["steps"] == 6
    assert set(result["metrics"]) == {"val", "test"}
    assert set(result["metrics"]["test"]) == {"seg", "depth", "normal"}
    assert 0.0 <= result["metrics"]["test"]["seg"]["mIoU"] <= 1.0
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["params"]["total"] == result["params"]["total"]
    rc, out, err = run_cli("-q", "eval", tiny_run / "final.pt", "--split", "test")
    assert rc == 0, err
    again = json.loads(out)["metrics"]
    for task in ("seg", "depth", "normal"):  # eval reproduces what finetune measured
        for name, value in result["metrics"]["test"][task].items():
            assert again[task][name] == __import__("pytest").approx(value, rel=1e-5, abs=1e-6)
    rc, out, _ = run_cli("-q", "eval", tiny_run / "final.pt", "--split", "val", "--metrics",
                         "reference")
    assert rc == 0 and json.loads(out)["metric_variant"] == "reference"


def test_finetune_resume_is_exact(tiny_run, run_cli, tmp_path):
    _derive(run_cli, tiny_run, "--plan", "specific")
    rc, _, err = run_cli("-q", "finetune", tiny_run, *FT)
    assert rc == 0, err
    full = torch.load(tiny_run / "finetune" / "last.pt", weights_only=True)["model"]
    # Simulate an interruption: keep only the step-3 checkpoint, then resume.
    (tiny_run / "finetune" / "last.pt").unlink()
    (tiny_run / "finetune" / "step-6.pt").unlink()
    import os

    os.link(tiny_run / "finetune" / "step-3.pt", tiny_run / "finetune" / "last.pt")
    rc, _, err = run_cli("-q", "finetune", tiny_run, *FT, "--resume")
    assert rc == 0, err
    resumed = torch.load(tiny_run / "finetune" / "last.pt", weights_only=True)
    assert resumed["step"] == 6
    for key, value in full.items():
        assert torch.equal(value, resumed["model"][key]), key


def test_candidates_are_selected_on_val(tiny_run, run_cli):
    rc, _, err = run_cli("-q", "search", tiny_run, "--experiment",
                         tiny_run.parent / "tiny.prototxt", "--warmup-iters", "2", "--iters", "4")
    assert rc == 0, err
    rc, _, err = run_cli("-q", "derive", tiny_run, "--samples", "2")
    assert rc == 0, err
    rc, out, err = run_cli("-q", "finetune", tiny_run, *FT, "--candidate-iters", "2", "--json")
    assert rc == 0, err
    selection = json.loads((tiny_run / "derived" / "selection.json").read_text())
    assert selection["selected"] in (0, 1) and len(selection["scores"]) == 2
    assert json.loads(out)["selection"]["selected"] == selection["selected"]


def test_finetune_without_derived_model_exits_66(tiny_run, run_cli):
    rc, _, err = run_cli("-q", "finetune", tiny_run)
    assert rc == 66 and "automtl derive" in err


def test_run_prints_the_table(tmp_path, run_cli, scene_cache):
    (tmp_path / "tiny.prototxt").write_text((ROOT / "tests" / "conftest.py").read_text().split(
        'TINY_EXPERIMENT = """')[1].split('"""')[0])
    rc, out, err = run_cli("-q", "run", ROOT / "specs" / "resnet18_w8.prototxt", "-o",
                           tmp_path / "r", "--experiment", tmp_path / "tiny.prototxt",
                           "--warmup-iters", "2", "--search-iters", "4", "--finetune-iters",
                           "3", "--random", "1")
    assert rc == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == [
        "single-task", "hard sharing", "random 0", "AutoMTL"]
    assert "0 (reference)" in rows[1]
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    methods = results["methods"]
    assert "delta" in methods["AutoMTL"]
    # equal budget: warm-up 2 + no weight step among the first 4 (policy) search steps + 3
    assert methods["AutoMTL"]["budget"] == {"weight_updates": 5, "finetune_iters": 3,
                                            "init": "search"}
    for name in ("single-task", "hard sharing", "random 0"):
        assert methods[name]["budget"] == {"weight_updates": 5, "finetune_iters": 5,
                                           "init": "scratch"}, name
        assert methods[name]["steps"] == 5
    assert methods["AutoMTL"]["derive"]["mode"] == "argmax"
    assert "5 (search 2 + fine-tune 3 from search)" in rows[-1]
    assert (tmp_path / "r" / "results.md").read_text().strip() in out


def test_search_budget_counts_weight_updates():
    from automtl_cli.engine.search import SearchConfig
    from automtl_cli.stages.run import search_weight_updates

    summed = SearchConfig(warmup_iters=4, iters=8, policy_steps=2, weight_steps=2)
    assert search_weight_updates(summed, 3) == 4 + 4  # warm-up + weight steps, not policy
    per_task = SearchConfig(warmup_iters=4, iters=8, policy_steps=2, weight_steps=2,
                            step="per-task")
    assert search_weight_updates(per_task, 3) == (4 + 4) * 3  # one step per task


def test_a_single_plan_clears_earlier_candidates(tiny_run, run_cli):
    exp = tiny_run.parent / "tiny.prototxt"
    rc, _, err = run_cli("-q", "search", tiny_run, "--experiment", exp, "--warmup-iters", "1",
                         "--iters", "1")
    assert rc == 0, err
    assert run_cli("-q", "derive", tiny_run, "--samples", "2")[0] == 0
    assert (tiny_run / "derived" / "candidates" / "1" / "model.pt").exists()
    assert run_cli("-q", "derive", tiny_run, "--mode", "argmax")[0] == 0
    assert not (tiny_run / "derived" / "candidates").exists()  # finetune cannot pick a stale one
