"""`--precision bf16`: autocast forward passes with float32 master weights (issue 18)."""

from __future__ import annotations

import json

import pytest
import torch

from automtl_cli.engine.finetune import FinetuneConfig
from automtl_cli.engine.precision import as_float, autocast
from automtl_cli.engine.search import SearchConfig

SEARCH = ["--warmup-iters", "2", "--iters", "2", "--policy-steps", "1", "--weight-steps", "1",
          "--checkpoint-every", "2"]


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        SearchConfig(warmup_iters=1, iters=1, policy_steps=1, weight_steps=1, precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        FinetuneConfig(iters=1, precision="half")


def test_bf16_region_computes_convolutions_in_bf16_and_hands_back_float32():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)
    with autocast("cpu", "bf16"):
        y = conv(x)
    assert y.dtype == torch.bfloat16 and conv.weight.dtype == torch.float32
    assert as_float({"a": y})["a"].dtype == torch.float32
    with autocast("cpu", "fp32"):
        assert conv(x).dtype == torch.float32


def test_bf16_search_and_finetune_run_and_resume_refuses_another_precision(tiny_run, run_cli):
    exp = tiny_run.parent / "tiny.prototxt"
    rc, out, err = run_cli("-q", "search", tiny_run, "--experiment", exp, *SEARCH,
                           "--precision", "bf16", "--json")
    assert rc == 0, err
    state = torch.load(tiny_run / "search" / "last.pt", weights_only=True)
    assert state["config"]["precision"] == "bf16"
    weights = [v for k, v in state["model"].items() if k.endswith("task.seg.weight")]
    assert weights and all(w.dtype == torch.float32 for w in weights)  # master weights
    rc, _, err = run_cli("-q", "search", tiny_run, "--experiment", exp, *SEARCH[:2], "--iters",
                         "4", *SEARCH[4:], "--resume")
    assert rc == 65 and "precision 'bf16'" in err, err
    rc, _, err = run_cli("-q", "derive", tiny_run, "--mode", "argmax")
    assert rc == 0, err
    rc, out, err = run_cli("-q", "finetune", tiny_run, "--iters", "2", "--precision", "bf16",
                           "--json")
    assert rc == 0, err
    result = json.loads(out)
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in result["metrics"]["val"].values())
    rc, out, err = run_cli("eval", tiny_run / "final.pt", "--precision", "bf16")
    assert rc == 0, err
    assert set(json.loads(out)["metrics"]) == {"seg", "depth", "normal"}
