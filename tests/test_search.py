"""`automtl search`: it learns, resumes to the bit, stops cleanly on signals and on NaN."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from automtl_cli.compiler.backbone import module_name
from automtl_cli.engine.regularizers import ParamsRegularizer, reference_regularizer
from automtl_cli.engine.schedule import Alternation, TauSchedule
from automtl_cli.tasks import Task

from conftest import ROOT
from conftest_proc import FOREVER, finish, kill_group, launch, wait_for

SHORT = ["--warmup-iters", "4", "--iters", "12", "--policy-steps", "3", "--weight-steps", "1",
         "--checkpoint-every", "4", "--log-every", "2"]


def _search(run_cli, run, *args):
    return run_cli("-q", "search", run, "--experiment", run.parent / "tiny.prototxt", *args)


def _log(run):
    return [json.loads(x) for x in (run / "search" / "log.jsonl").read_text().splitlines()]


def _state(run, name="last.pt"):
    return torch.load(run / "search" / name, weights_only=True)


def test_search_learns_a_policy(tiny_run, run_cli):
    rc, out, err = _search(run_cli, tiny_run, "--warmup-iters", "6", "--iters", "40",
                           "--policy-steps", "3", "--weight-steps", "1", "--policy-lr", "0.1",
                           "--tau-every", "5", "--log-every", "4", "--json")
    assert rc == 0, err
    summary = json.loads(out)
    log = _log(tiny_run)
    search = [r for r in log if r["step"] > 6]
    assert search[0]["entropy"] > search[-1]["entropy"] + 0.02
    assert summary["entropy"] < math.log(3) - 0.02
    assert search[-1]["tau"] < search[0]["tau"]  # the temperature fell
    assert [r["step"] for r in log] == [*range(4, 47, 4), 46]
    state = _state(tiny_run)
    assert state["kind"] == "search-checkpoint" and state["complete"] and state["step"] == 46
    assert len(summary["policy"]) == 20  # one row per searchable convolution
    # how decided the policy is, per search node, in every log line
    for r in log:
        assert len(r["node_entropy"]) == len(r["node_chosen_p"]) == 20
        assert all(1 / 3 - 1e-4 <= p <= 1 for p in r["node_chosen_p"])  # 4 decimals
        assert all(0 <= e <= math.log(3) + 1e-6 for e in r["node_entropy"])
    assert search[-1]["decided"] > search[0]["decided"]
    assert summary["decided"] == pytest.approx(search[-1]["decided"], abs=1e-4)


def test_policy_steps_move_only_logits(tiny_run, run_cli):
    """Steps 4–6 are policy steps: weights stay, logits move; step 7 is a weight step."""
    rc, _, err = _search(run_cli, tiny_run, "--warmup-iters", "4", "--iters", "3",
                         "--policy-steps", "3", "--weight-steps", "1", "--checkpoint-every", "4")
    assert rc == 0, err
    after_warmup = _state(tiny_run, "step-4.pt")["model"]
    after_policy = _state(tiny_run, "step-7.pt")["model"]
    for key, value in after_warmup.items():
        moved = not torch.equal(value, after_policy[key])
        if ".policy." in key:
            assert moved, key
        elif not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert not moved, key


def _search_process(run, *args):
    return launch("search", run, "--experiment", run.parent / "tiny.prototxt", *args)


# More steps than any test run reaches: it is always stopped by a signal, never by finishing.
LONG = ["--warmup-iters", "6", "--iters", FOREVER, "--policy-steps", "3", "--weight-steps", "2",
        "--checkpoint-every", "8", "--log-every", "4", "--keep", "1000"]


def test_sigterm_checkpoints_and_exits_75(tiny_run):
    proc = _search_process(tiny_run, *LONG)
    wait_for(tiny_run / "search" / "step-8.pt", proc)
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish(proc)
    assert rc == 75, err
    assert "rerun with --resume" in err and err.startswith("error: ")
    stopped = _state(tiny_run)
    assert stopped["step"] >= 8 and not stopped["complete"]
    # --resume continues from there (bit-exactness: tests/test_reproducibility.py)
    proc = _search_process(tiny_run, *LONG, "--resume")
    wait_for(tiny_run / "search" / f"step-{stopped['step'] // 8 * 8 + 16}.pt", proc)
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish(proc)
    assert rc == 75, err
    steps = [r["step"] for r in _log(tiny_run)]
    assert steps == sorted(set(steps)) and steps[-1] > stopped["step"]


def _group_gone(pgid: int, timeout: float = 120.0) -> bool:
    """Whether every process of the group has exited (polled, up to a generous timeout)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("stage", ["search", "finetune"])
def test_sigterm_to_the_process_group_with_workers(tiny_run, run_cli, stage):
    """What `scancel` and a terminal do: SIGTERM to every process of the job, data workers
    included. The main process checkpoints and exits 75; no worker is left behind."""
    if stage == "finetune":
        assert _search(run_cli, tiny_run, "--warmup-iters", "2", "--iters", "0")[0] == 0
        assert run_cli("-q", "derive", tiny_run, "--mode", "argmax")[0] == 0
        proc = launch("finetune", tiny_run, "--iters", FOREVER, "--checkpoint-every", "4",
                      "--workers", "2")
    else:
        proc = _search_process(tiny_run, *LONG, "--workers", "2")
    wait_for(tiny_run / stage / ("step-8.pt" if stage == "search" else "step-4.pt"), proc)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        rc, _, err = finish(proc)
        assert rc == 75, err
        assert "Traceback" not in err and "killed by signal" not in err, err
        assert _group_gone(proc.pid), "a data worker outlived the run"
    finally:
        kill_group(proc)


def test_resume_refuses_another_run(tiny_run, run_cli, tmp_path):
    rc, _, err = _search(run_cli, tiny_run, "--warmup-iters", "2", "--iters", "0",
                         "--checkpoint-every", "1")
    assert rc == 0, err
    other = tmp_path / "again"
    assert run_cli("-q", "compile", ROOT / "specs" / "resnet18_w8.prototxt", "-o", other,
                   "--tasks", "seg,depth")[0] == 0
    (other / "search").mkdir()
    (other / "search" / "last.pt").write_bytes((tiny_run / "search" / "last.pt").read_bytes())
    rc, _, err = run_cli("-q", "search", other, "--experiment", tiny_run.parent / "tiny.prototxt",
                         "--tasks", "seg,depth", "--resume")
    assert rc == 65 and "belongs to another run" in err
    rc, _, err = run_cli("-q", "search", tmp_path / "nowhere", "--resume")
    assert rc == 66


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_run, run_cli, monkeypatch):
    calls = {"n": 0}
    real_loss = Task.loss

    def poisoned(self, pred, batch):
        loss = real_loss(self, pred, batch)
        if self.name == "depth":
            calls["n"] += 1
            if calls["n"] == 11:  # the 11th step, index 10
                return loss * float("nan")
        return loss

    monkeypatch.setattr(Task, "loss", poisoned)
    rc, _, err = _search(run_cli, tiny_run, *SHORT)
    assert rc == 65
    assert "the depth loss became non-finite at step 10" in err
    last = _state(tiny_run)
    assert last["step"] == 8
    assert all(torch.isfinite(v).all() for v in last["model"].values()
               if v.is_floating_point())
    assert not (tiny_run / "search" / "step-12.pt").exists()


def test_per_task_stepping_runs(tiny_run, run_cli):
    rc, out, err = _search(run_cli, tiny_run, "--warmup-iters", "2", "--iters", "4",
                           "--policy-steps", "2", "--weight-steps", "2", "--step", "per-task",
                           "--checkpoint-every", "1", "--keep", "10", "--json")
    assert rc == 0, err
    assert json.loads(out)["steps"] == 6
    # one optimiser step per task per iteration: for what every task uses (the backbone) 3 per
    # iteration, for what one task alone uses (its head) 1
    warm = _state(tiny_run, "step-1.pt")["optimizers"]["warmup"]
    assert {float(s["step"]) for s in warm["state"].values()} == {1.0, 3.0}
    optimizers = _state(tiny_run)["optimizers"]
    assert {float(s["step"]) for s in optimizers["policy"]["state"].values()} == {6.0}
    # the warm-up's optimiser state is not kept once the warm-up is over
    assert "warmup" not in optimizers and "warmup" not in _state(tiny_run, "step-2.pt")[
        "optimizers"]


def test_resume_refuses_other_settings_but_may_run_longer(tiny_run, run_cli):
    args = ["--warmup-iters", "2", "--iters", "2", "--policy-steps", "1", "--weight-steps", "1",
            "--checkpoint-every", "2"]
    assert _search(run_cli, tiny_run, *args)[0] == 0
    rc, _, err = _search(run_cli, tiny_run, *args, "--seed", "9", "--resume")
    assert rc == 65 and "seed 0 → 9" in err and err.count("\n") == 1, err
    rc, _, err = _search(run_cli, tiny_run, *args, "--policy-lr", "0.5", "--resume")
    assert rc == 65 and "policy_lr" in err, err
    longer = [a if a != "2" or i != 3 else "4" for i, a in enumerate(args)]  # --iters 4
    rc, out, err = _search(run_cli, tiny_run, *longer, "--resume", "--json")
    assert rc == 0 and json.loads(out)["steps"] == 6, err


def test_reg_none_is_the_search_without_the_regulariser(tiny_run, run_cli, tmp_path):
    """`--reg none` trains exactly what a zero regulariser weight trains, and logs reg 0."""
    twin = tmp_path / "twin"
    shutil.copytree(tiny_run, twin)
    args = ["--warmup-iters", "2", "--iters", "6", "--policy-steps", "2", "--weight-steps", "1",
            "--log-every", "2"]
    rc, _, err = _search(run_cli, tiny_run, *args, "--reg", "none")
    assert rc == 0, err
    rc, _, err = _search(run_cli, twin, *args, "--reg", "reference", "--reg-weight", "0")
    assert rc == 0, err
    assert torch.equal(_state(tiny_run)["policy_logits"], _state(twin)["policy_logits"])
    assert all(r["reg"] == 0 for r in _log(tiny_run) if "reg" in r)
    assert any(r.get("reg", 0) > 0 for r in _log(twin))  # the reference one is computed


# --------------------------------------------------------------------------- units

def test_reference_regularizer_by_hand():
    logits = torch.tensor([[[0.0, 1.0, -1.0]], [[2.0, 0.0, 0.0]]])  # S=2, T=1
    noise = torch.tensor([[[0.5, 0.0, 0.0]], [[0.0, 0.0, 1.0]]])
    weights = torch.tensor([1.0, 0.5])
    tau = 2.0
    total = 0.0
    for n in range(2):
        z = [(logits[n, 0, k].item() + noise[n, 0, k].item()) / tau for k in range(3)]
        e = [math.exp(v) for v in z]
        p = [v / sum(e) for v in e]
        term = math.log(1 + math.exp(6 * (p[1] - p[0]))) + math.log(1 + math.exp(6 * (p[2] - p[0])))
        total += weights[n].item() * term
    got = reference_regularizer(logits, noise, tau, weights, scale=6.0)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(total, rel=1e-6)


def test_params_regularizer_by_hand():
    reg = ParamsRegularizer(shared=[100, 10], skip=[0, 4], tasks=2)
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [1.0, 1e-9, 1e-9]],
                                     [[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]]]))
    # node 0: P(any shared) = 1 − 0.5·0 = 1 → 100; specific 0.25·100; skip 0
    # node 1: P(any shared) = 1 − 0.8² = 0.36 → 3.6; specific 0.6·10 = 6; skip 1.0·4 = 4
    expected = (100 + 25 + 3.6 + 6 + 4) / (2 * 110)
    assert reg(logits).item() == pytest.approx(expected, rel=1e-5)
    aimed = ParamsRegularizer(shared=[100, 10], skip=[0, 4], tasks=2, target=0.7)
    assert aimed(logits).item() == 0.0


def test_tau_schedule_and_alternation_follow_the_sheet():
    tau = TauSchedule(5.0, 0.965, 101)
    assert tau.at(100) == 5.0 and tau.at(101) == pytest.approx(5 * 0.965)
    assert tau.at(10000) == pytest.approx(5 * 0.965 ** 99)  # NYUv2: 99 decays, τ ≈ 0.147
    assert tau.at(10000) == pytest.approx(0.147, abs=1e-3)
    assert tau.at(4000) == pytest.approx(1.25, abs=0.01)  # CityScapes: 39 decays
    alt = Alternation(warmup=10, policy_steps=2, weight_steps=3)
    stages = [alt.stage(i) for i in range(20)]
    assert stages[:10] == ["warmup"] * 10
    assert stages[10:20] == ["policy"] * 2 + ["weight"] * 3 + ["policy"] * 2 + ["weight"] * 3
    for step in range(30):
        assert alt.policy_steps_before(step) == sum(alt.stage(i) == "policy" for i in range(step))


def test_inspect_shows_the_policy_and_plots_it(tiny_run, run_cli, tmp_path, monkeypatch):
    rc, _, err = _search(run_cli, tiny_run, "--warmup-iters", "2", "--iters", "4")
    assert rc == 0, err
    rc, out, _ = run_cli("inspect", tiny_run / "search" / "last.pt")
    assert rc == 0
    assert "search checkpoint at step 6" in out and "layer4.1.conv2" in out
    rc, out, _ = run_cli("inspect", tiny_run / "search" / "last.pt", "--json")
    rows = json.loads(out)["policy"]
    assert len(rows) == 20 and all(sum(r["seg"]) == pytest.approx(1, abs=1e-3) for r in rows)
    pytest.importorskip("matplotlib")
    png = tmp_path / "policy.png"
    rc, out, err = run_cli("inspect", tiny_run / "search" / "last.pt", "--plot", png)
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were missing
    rc, _, err = run_cli("inspect", tiny_run / "search" / "last.pt", "--plot", png)
    assert rc == 69 and "pip install 'automtl[plot]'" in err


@pytest.mark.parametrize("estimator", ["gdas", "darts"])
def test_estimator_search_runs(tiny_run, run_cli, estimator):
    rc, out, err = _search(run_cli, tiny_run, "--warmup-iters", "2", "--iters", "6",
                           "--estimator", estimator, "--policy-steps", "3", "--weight-steps",
                           "1", "--json")
    assert rc == 0, err
    assert json.loads(out)["steps"] == 8
    state = _state(tiny_run)
    assert state["config"]["estimator"] == estimator
    assert not torch.equal(state["policy_logits"], torch.zeros_like(state["policy_logits"]))


def test_derive_reads_the_policy_tensor_and_refuses_a_wrong_one(tiny_run, run_cli):
    rc, _, err = _search(run_cli, tiny_run, "--warmup-iters", "1", "--iters", "2")
    assert rc == 0, err
    state = _state(tiny_run)
    assert state["policy_logits"].shape == (20, 3, 3)  # search nodes × tasks × branches
    for i, node in enumerate(state["search_nodes"]):  # the same numbers as the weights hold
        key = f"backbone.{module_name(node)}.policy.depth"
        assert torch.equal(state["policy_logits"][i, 1], state["model"][key])
    state["policy_logits"] = torch.zeros(1, 3, 3)
    torch.save(state, tiny_run / "search" / "last.pt")
    rc, _, err = run_cli("-q", "derive", tiny_run, "--mode", "argmax")
    assert rc == 65 and "policy_logits should be a tensor of shape [20, 3, 3]" in err, err


def test_a_process_exits_with_its_data_workers_still_running(tmp_path):
    """Workers ignore SIGTERM (above), so multiprocessing's own exit handler, which terminates
    and then joins them, would wait forever; the process must still exit, and cleanly."""
    script = tmp_path / "leave_workers.py"
    script.write_text(
        "from automtl_cli.data.loader import build_loader\n"
        "from automtl_cli.experiment import default_experiment\n"
        "data = default_experiment().resolve().data\n"
        "batches = build_loader(data, ('seg',), 'train', batch_size=4, num_workers=2,\n"
        "                       count=16).forever()\n"
        "next(batches)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, env=env)  # a hang fails here
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("recipe", ["WARMUP", "POLICY", "WEIGHT", "FINETUNE"])
def test_optimizers_update_as_the_per_tensor_loop_does(recipe):
    """The recipes' `foreach` updates are a speed choice only: the same bits as PyTorch's
    per-tensor loop (its CPU default)."""
    from automtl_cli.engine import optimizers

    chosen = getattr(optimizers, recipe)
    g = torch.Generator().manual_seed(5)
    shapes = [(8, 4, 3, 3), (8,), (3, 8, 4, 3, 3), (2, 3)]
    start = [torch.randn(s, generator=g) for s in shapes]
    grads = [[torch.randn(s, generator=g) for s in shapes] for _ in range(4)]
    finals = []
    for make in (lambda ps: chosen.build(ps, 0.01),
                 lambda ps: chosen.optimizer(ps, lr=0.01, foreach=False, **chosen.options)):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = make(params)
        for step in grads:
            for p, grad in zip(params, step):
                p.grad = grad.clone()
            opt.step()
        finals.append([p.detach() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*finals))


@pytest.mark.parametrize("stage", ["search", "finetune"])
def test_a_bad_checkpoint_is_refused_before_the_data_is_built(tiny_run, run_cli, tmp_path,
                                                              monkeypatch, stage):
    experiment = ["--experiment", tiny_run.parent / "tiny.prototxt"] if stage == "search" \
        else []
    if stage == "finetune":
        assert run_cli("-q", "derive", tiny_run, "--plan", "shared", *(
            "--experiment", tiny_run.parent / "tiny.prototxt"))[0] == 0
    (tiny_run / stage).mkdir(exist_ok=True)
    (tiny_run / stage / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    fresh = tmp_path / "fresh-cache"
    monkeypatch.setenv("AUTOMTL_CACHE", str(fresh))
    rc, _, err = run_cli("-q", stage, tiny_run, *experiment, "--resume")
    assert rc == 65 and "last.pt" in err, err
    assert not any(fresh.rglob("*.npz"))  # no scene was made for a run that cannot go on
