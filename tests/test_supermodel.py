"""The supermodel: equivalences (a)–(d) of the MTS-compiler issue, and its parameter accounting."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from automtl_cli.compiler.backbone import build_backbone
from automtl_cli.compiler.space import SearchSpace, space_summary
from automtl_cli.compiler.supermodel import (
    SearchBatchNorm,
    SearchConv,
    build_supermodel,
    extract_backbone_state,
    gdas_weights,
    gumbel_noise,
)
from automtl_cli.frontend.build import CompileOptions, build_graph

from conftest import ROOT, corpus_dir, perturbed_supermodel

SMALL_SPECS = ["resnet18_w8", "resnet34_w8", "mobilenetv2"]
TASKS3 = ("seg", "depth", "normal")


def _graph(path, shape):
    return build_graph(path, CompileOptions(input_shapes={None: shape})).graph


def spec_graph(name, shape=(2, 3, 32, 32)):
    return _graph(ROOT / "specs" / f"{name}.prototxt", shape)


def reference_graph(name, shape=(2, 3, 32, 32)):
    return _graph(corpus_dir() / "automtl" / f"{name}.prototxt", shape)


def _dtype(device):
    # Float64 on CPU, so that a 1e-4 tolerance separates a bug from rounding through twenty
    # BatchNorms; float32 without TF32 on a GPU.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch.float64 if device.type == "cpu" else torch.float32


def _rel(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-6) -> float:
    """Relative difference; gradients that are zero in exact arithmetic carry rounding noise."""
    return ((a - b).norm() / (b.norm() + floor)).item()


# --------------------------------------------------------------------------- (a)

@pytest.mark.parametrize("bn", ["task", "follow", "shared"])
@pytest.mark.parametrize("spec", SMALL_SPECS)
def test_one_task_all_shared_equals_plain_backbone(spec, bn, device):
    g = spec_graph(spec)
    model = build_supermodel(g, SearchSpace(("seg",), bn), seed=3).to(device)
    backbone = build_backbone(g).to(device)
    backbone.load_state_dict(extract_backbone_state(model, 0))
    x = torch.randn(2, 3, 32, 32, device=device)
    for train in (True, False):
        model.train(train)
        backbone.train(train)
        with torch.no_grad():
            ours = model(x, "hard", policy=torch.zeros(len(g.searchable), 1, dtype=torch.long))
            plain = backbone(x)
        assert ours.shape[1] == 1
        torch.testing.assert_close(ours[:, 0], plain, rtol=1e-5, atol=1e-5)


def test_one_task_equals_backbone_on_reference_file(device):
    g = reference_graph("deeplab_resnet34_adashare", (1, 3, 48, 48))
    model = build_supermodel(g, SearchSpace(("seg",)), seed=1).to(device).eval()
    backbone = build_backbone(g).to(device).eval()
    backbone.load_state_dict(extract_backbone_state(model, 0))
    x = torch.randn(1, 3, 48, 48, device=device)
    with torch.no_grad():
        torch.testing.assert_close(model(x, "hard")[:, 0], backbone(x), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- (b)

def _compare_fused_and_reference(g, space, device, stages=("warmup", "soft", "hard"), n=2,
                                 hw=32):
    dtype = _dtype(device)
    base = build_supermodel(g, space, seed=0).to(device=device, dtype=dtype)
    t, s = len(space.tasks), len(g.searchable)
    with torch.no_grad():  # break the symmetry of fresh logits and BN affines
        for m in base.modules():
            if isinstance(m, SearchConv):
                m.policy.normal_()
                m.task_weight.add_(0.05 * torch.randn_like(m.task_weight))
            if isinstance(m, SearchBatchNorm) and m.has_task and m.task_weight is not None:
                m.task_weight.uniform_(0.5, 1.5)
                m.task_bias.normal_()
    x = torch.randn(t, n, 3, hw, hw, device=device, dtype=dtype)
    for stage in stages:
        kw = {}
        if stage == "soft":
            kw = {"noise": gumbel_noise((s, t, 3), seed=5, step=1).to(device, dtype), "tau": 2.0}
        if stage == "hard":
            kw = {"policy": torch.randint(0, 3, (s, t), generator=torch.Generator().manual_seed(7))}
        fused, ref = copy.deepcopy(base), copy.deepcopy(base)
        y_fused = fused(x, stage, **kw)
        y_ref = ref.forward_reference(x, stage, **kw)
        weights = [torch.randn_like(y) for y in y_ref]
        for i in range(t):
            assert _rel(y_fused[:, i], y_ref[i]) < 1e-4, (stage, i)
        sum((y_fused[:, i] * w).sum() for i, w in enumerate(weights)).backward()
        sum((y * w).sum() for y, w in zip(y_ref, weights)).backward()
        ref_params = dict(ref.named_parameters())
        grads = [q.grad for q in ref_params.values() if q.grad is not None]
        # Gradients that vanish in exact arithmetic (a bias before BatchNorm) keep rounding
        # noise; judge those against the size of the gradient as a whole.
        floor = 1e-3 * torch.cat([g.flatten() for g in grads]).norm().item()
        compared = 0
        for name, p in fused.named_parameters():
            q = ref_params[name]
            if q.grad is None:
                assert p.grad is None or p.grad.abs().max() == 0, (stage, name)
                continue
            assert p.grad is not None, (stage, name)
            rel = _rel(p.grad, q.grad, floor)
            assert rel < 1e-4, (stage, name, rel)
            compared += 1
        assert compared > 0
        # running statistics follow the same per-task batches
        for (name, b), (_, c) in zip(fused.named_buffers(), ref.named_buffers()):
            if b.is_floating_point():
                assert _rel(b, c) < 1e-4, (stage, name)


@pytest.mark.parametrize("spec, bn, skip", [
    ("resnet18_w8", "task", "reference"), ("resnet18_w8", "follow", "reference"),
    ("resnet18_w8", "shared", "cheap"), ("resnet18_w8", "task", "cheap"),
    ("mobilenetv2", "task", "reference"), ("mobilenetv2", "follow", "cheap"),
])
def test_fused_equals_per_task_reference(spec, bn, skip, device):
    # 48 px: MobileNetV2's last maps are then 2×2, enough values per channel for BatchNorm
    hw = 48 if spec == "mobilenetv2" else 32
    _compare_fused_and_reference(spec_graph(spec, (2, 3, hw, hw)), SearchSpace(TASKS3, bn, skip),
                                 device, hw=hw)


@pytest.mark.parametrize("name", ["deeplab_resnet34_adashare", "mobilenetv2", "mnasnet"])
def test_fused_equals_reference_on_reference_files(name, device):
    n, hw = (1, 32) if name.startswith("deeplab") else (2, 48)
    g = reference_graph(name, (n, 3, hw, hw))
    _compare_fused_and_reference(g, SearchSpace(("seg", "depth")), device, stages=("soft",),
                                 n=n, hw=hw)


# --------------------------------------------------------------------------- (c), (d)

@pytest.mark.parametrize("spec", SMALL_SPECS)
def test_task_copies_start_equal_to_shared(spec):
    model = build_supermodel(spec_graph(spec), SearchSpace(TASKS3), seed=11)
    state = model.state_dict()
    node = model.search_names[0]
    for task in TASKS3:
        assert torch.equal(state[f"{node}.task.{task}.weight"], state[f"{node}.shared.weight"])
        assert torch.equal(state[f"{node}.policy.{task}"], torch.zeros(3))
    for m in model.search_nodes:
        for i in range(3):
            assert torch.equal(m.task_conv(i).weight, m.shared_conv().weight)


def _all_graphs():
    out = [(f"specs/{p.stem}", p) for p in sorted((ROOT / "specs").glob("*.prototxt"))]
    corpus = ROOT.parent / "shared" / "prototxt"
    out += [(f"corpus/{p.parent.name}/{p.stem}", p) for p in sorted(corpus.glob("*/*.prototxt"))]
    return out


@pytest.mark.parametrize("skip", ["reference", "cheap"])
@pytest.mark.parametrize("label, path", _all_graphs(), ids=[a for a, _ in _all_graphs()])
def test_every_skip_has_its_convolutions_shape(label, path, skip):
    if "train_val" in label:
        opts = CompileOptions(input_shapes={None: (1, 3, 227, 227)})
    else:
        first = build_graph(path).graph
        shape = next(iter(first.inputs.values()))
        opts = CompileOptions(input_shapes={None: (1, *shape[1:])})
    g = build_graph(path, opts).graph
    shapes = g.value_shapes()
    model = build_supermodel(g, SearchSpace(("a", "b"), skip=skip)).eval()
    checked = 0
    with torch.no_grad():
        for m, node in zip(model.search_nodes, g.searchable):
            x = torch.zeros(1, 2 * shapes[node.inputs[0]][1], *shapes[node.inputs[0]][2:])
            y = m.skip(x)
            assert tuple(y.shape) == (1, 2 * node.shapes[0][1], *node.shapes[0][2:]), node.name
            checked += 1
    assert checked == len(g.searchable) > 0


# --------------------------------------------------------------------------- accounting

_CATEGORY = (("policy", "policy"), ("skip", "skip"))


def _category(model, key: str) -> str:
    node = key.split(".")[0]
    module = model.graph_module.get_submodule(node)
    part = key.split(".")[1]
    if isinstance(module, SearchConv):
        return {"shared": "shared_conv", "task": "task_conv", "skip": "skip",
                "policy": "policy"}[part]
    if isinstance(module, SearchBatchNorm):
        return "shared_bn" if part == "shared" else "task_bn"
    return "other"


@pytest.mark.parametrize("bn", ["task", "follow", "shared"])
@pytest.mark.parametrize("skip", ["reference", "cheap"])
def test_breakdown_matches_the_module(bn, skip):
    g = spec_graph("mobilenetv2")
    space = SearchSpace(TASKS3, bn, skip)
    model = build_supermodel(g, space)
    counted = dict.fromkeys(("shared_conv", "task_conv", "skip", "shared_bn", "task_bn",
                             "policy", "other"), 0)
    params = {n for n, _ in model.named_parameters()}
    for key, value in model.state_dict().items():
        internal = key  # parameters only: buffers (running statistics) are not counted
        if not _is_parameter(model, internal, params):
            continue
        counted[_category(model, key)] += value.numel()
    counted["total"] = sum(counted.values())
    assert counted == space_summary(g, space)["params"]
    assert counted["total"] == sum(p.numel() for p in model.parameters())


def _is_parameter(model, key: str, params: set[str]) -> bool:
    return not key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def test_state_dict_round_trips_with_readable_keys():
    g = spec_graph("resnet18_w8")
    a = build_supermodel(g, SearchSpace(TASKS3), seed=1)
    b = build_supermodel(g, SearchSpace(TASKS3), seed=2)
    keys = list(a.state_dict())
    assert "conv1.shared.weight" in keys and "conv1.task.depth.weight" in keys
    assert "conv1.skip.depth.0.weight" in keys and "conv1.policy.depth" in keys
    assert "bn1.task.normal.running_mean" in keys and "bn1.shared.weight" in keys
    assert not any(k.startswith("graph_module") for k in keys)
    b.load_state_dict(a.state_dict())
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(v, w), k
    broken = a.state_dict()
    del broken["conv1.task.seg.weight"]
    with pytest.raises(RuntimeError, match=r"conv1\.task\.seg\.weight"):
        b.load_state_dict(broken)


def test_weights_come_from_the_seed():
    g = spec_graph("resnet18_w8")
    one = build_supermodel(g, SearchSpace(TASKS3), seed=4).state_dict()
    two = build_supermodel(g, SearchSpace(TASKS3), seed=4).state_dict()
    other = build_supermodel(g, SearchSpace(TASKS3), seed=5).state_dict()
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert not torch.equal(one["conv1.shared.weight"], other["conv1.shared.weight"])


def test_generated_forward_is_straight_line_code():
    model = build_supermodel(spec_graph("resnet18_w8"), SearchSpace(TASKS3))
    code = model.graph_module.code
    assert "for " not in code and "conv1 = self.conv1(x, pi, stage)" in code


def test_gumbel_noise_depends_on_seed_and_step_only():
    a = gumbel_noise((4, 3, 3), seed=1, step=10)
    assert torch.equal(a, gumbel_noise((4, 3, 3), seed=1, step=10))
    assert not torch.equal(a, gumbel_noise((4, 3, 3), seed=1, step=11))


def test_hard_policy_selects_one_branch():
    g = spec_graph("resnet18_w8")
    model = build_supermodel(g, SearchSpace(("a", "b"))).eval()
    s = len(g.searchable)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        shared = model(x, "hard", policy=torch.zeros(s, 2, dtype=torch.long))
        # all-shared: both tasks see the same weights and (fresh, equal) BNs
        torch.testing.assert_close(shared[:, 0], shared[:, 1])
        mixed = model(x, "hard", policy=torch.tensor([[0, 2]] * s))
        torch.testing.assert_close(mixed[:, 0], shared[:, 0])
        assert not torch.allclose(mixed[:, 1], shared[:, 1])


# --------------------------------------------------------------------------- GDAS

def test_gdas_forward_is_the_hard_path_of_the_sampled_policy():
    g = spec_graph("resnet18_w8")
    for bn in ("task", "follow"):
        model = perturbed_supermodel(g, SearchSpace(TASKS3, bn))
        s = len(g.searchable)
        noise = gumbel_noise((s, 3, 3), seed=2, step=0)
        with torch.no_grad():
            for m in model.search_nodes:
                m.policy.normal_(0, 2)
        sampled = ((model.logits() + noise) / 0.5).argmax(-1)
        x = torch.randn(3, 2, 3, 32, 32)
        model.eval()
        with torch.no_grad():
            gdas = model(x, "gdas", noise=noise, tau=0.5)
            hard = model(x, "hard", policy=sampled)
        torch.testing.assert_close(gdas, hard, rtol=1e-5, atol=1e-5)
        assert (sampled == 2).any() and (sampled < 2).any()


def test_gdas_gradients_reach_only_the_sampled_branches():
    g = spec_graph("resnet18_w8")
    model = perturbed_supermodel(g, SearchSpace(TASKS3))
    s = len(g.searchable)
    noise = gumbel_noise((s, 3, 3), seed=3, step=0)
    soft = torch.softmax(model.logits() + noise, dim=-1)
    soft.retain_grad()
    pi = gdas_weights(soft)
    model(torch.randn(3, 2, 3, 32, 32), "gdas", pi=pi).square().mean().backward()
    chosen = F.one_hot(pi.detach().argmax(-1), 3).bool()
    assert torch.equal(pi.detach(), chosen.float())  # the forward uses the sampled branch only
    assert (soft.grad[~chosen] == 0).all()
    assert (soft.grad[chosen] != 0).float().mean() > 0.9
    assert all(m.policy.grad is not None and m.policy.grad.abs().sum() > 0
               for m in model.search_nodes)


# --------------------------------------------------------------------------- speed paths

@pytest.mark.parametrize("mode", ["grouped", "separate", "channels_last", "gemm"])
def test_every_conv_mode_equals_the_reference(mode, device, monkeypatch):
    """However a layer's task convolutions run (issue 18: chosen per layer by shape), outputs,
    gradients and statistics are the reference's."""
    import automtl_cli.compiler.supermodel.conv as conv

    monkeypatch.setattr(conv, "conv_mode", lambda *a, **k: mode)
    _compare_fused_and_reference(spec_graph("resnet18_w8"), SearchSpace(TASKS3, "task"), device,
                                 stages=("soft", "hard"))


def test_no_strided_1x1_runs_in_channels_last():
    """A strided 1×1 in channels-last corrupted the heap in training (a random plan's fine-tune
    aborted in malloc); the layer rule keeps it in NCHW even where channels-last would be
    chosen for its few input channels."""
    from automtl_cli.compiler.supermodel.conv import conv_mode

    assert conv_mode(3, 1, (7, 7), (64, 64), "cpu", (2, 2)) == "channels_last"
    assert conv_mode(3, 1, (1, 1), (64, 64), "cpu", (1, 1)) == "channels_last"
    assert conv_mode(3, 1, (1, 1), (64, 64), "cpu", (2, 2)) != "channels_last"
    assert conv_mode(3, 1, (1, 1), (64, 64), "cpu", (1, 2)) != "channels_last"


def test_layer_rule_gives_deep_bf16_layers_the_gemm_weight_gradient():
    """oneDNN's bf16 weight gradient of the deep layers is no faster than its float32 one
    (issue 18, docs/performance.md): under autocast they take the GEMM one; float32 keeps T
    separate convolutions, and shallow layers keep oneDNN's grouped one."""
    from automtl_cli.compiler.supermodel.conv import conv_mode

    deep = (256, 1, (3, 3), (9, 9), "cpu", (1, 1))
    assert conv_mode(*deep) == "separate"
    assert conv_mode(*deep, autocast=True) == "gemm"
    assert conv_mode(64, 1, (3, 3), (17, 17), "cpu", autocast=True) == "grouped"
    assert conv_mode(256, 1, (3, 3), (9, 9), "cuda", autocast=True) == "grouped"


@pytest.mark.parametrize("mode", ["grouped", "separate", "gemm"])
def test_bf16_search_step_stays_in_bf16_and_matches_the_reference(mode, monkeypatch):
    """Under autocast the fused step computes what the per-task execution computes, to bf16's
    precision, and its nodes hand bf16 on: a float32 π joining the skip branch would promote
    every activation after it to float32 (twice the memory traffic and a cast per layer)."""
    import automtl_cli.compiler.supermodel.conv as conv

    # float32's layers grouped: the autocast region must switch to its own mode
    monkeypatch.setattr(conv, "conv_mode",
                        lambda *a, autocast=False, **k: mode if autocast else "grouped")
    g = spec_graph("resnet18_w8")
    base = perturbed_supermodel(g, SearchSpace(TASKS3), seed=3)
    t, s = len(TASKS3), len(g.searchable)
    x = torch.randn(t, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    kw = {"noise": gumbel_noise((s, t, 3), seed=5, step=1), "tau": 2.0}
    fused, ref = copy.deepcopy(base), copy.deepcopy(base)
    dtypes = []
    for m in fused.search_nodes:
        assert (m.mode, m.mode_autocast) == ("grouped", mode)
        m.register_forward_hook(lambda mod, args, out: dtypes.append(out.dtype))
    with torch.no_grad():
        exact = copy.deepcopy(base).forward_reference(x, "soft", **kw)  # float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_fused = fused(x, "soft", **kw)
        y_ref = ref.forward_reference(x, "soft", **kw)
    assert set(dtypes) == {torch.bfloat16}
    for i in range(t):  # as close to float32 as the per-task execution in bf16 is
        err_fused = _rel(y_fused[:, i].float(), exact[i])
        err_ref = _rel(y_ref[i].float(), exact[i])
        assert err_fused < max(2 * err_ref, 1e-2), (i, err_fused, err_ref)
    weights = [torch.randn(y.shape, generator=torch.Generator().manual_seed(i))
               for i, y in enumerate(y_ref)]
    exact_model = copy.deepcopy(base)
    y_exact = exact_model.forward_reference(x, "soft", **kw)
    sum((y * w).sum() for y, w in zip(y_exact, weights)).backward()
    sum((y_fused[:, i].float() * w).sum() for i, w in enumerate(weights)).backward()
    sum((y.float() * w).sum() for y, w in zip(y_ref, weights)).backward()
    # bf16 moves every gradient of this untrained net by tens of percent from float32, the
    # per-task execution's as much as the fused step's: judge the whole gradient, against both
    grads = {}
    for label, model in (("exact", exact_model), ("fused", fused), ("ref", ref)):
        assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)
        grads[label] = torch.cat([p.grad.flatten() for p in model.parameters()
                                  if p.grad is not None])
    err_fused = _rel(grads["fused"], grads["exact"])
    err_ref = _rel(grads["ref"], grads["exact"])
    assert err_fused < 1.5 * err_ref, (err_fused, err_ref)


@pytest.mark.parametrize("kernel,stride,padding,dilation,layout", [
    ((3, 3), (1, 1), (2, 2), (2, 2), "nchw"), ((3, 2), (2, 1), (1, 2), (2, 3), "nchw"),
    ((1, 1), (2, 2), (0, 0), (1, 1), "nchw"), ((3, 3), (1, 1), (1, 1), (1, 1), "channels_last")])
def test_task_convolutions_with_a_gemm_weight_gradient(kernel, stride, padding, dilation,
                                                       layout):
    """`gemm_conv.task_conv_gemm` is F.conv2d over T task groups: the same output, input,
    weight and bias gradients (float64), and oneDNN's to rounding in bf16."""
    from automtl_cli.compiler.supermodel.gemm_conv import task_conv_gemm

    g = torch.Generator().manual_seed(1)
    t, c, o = 3, 5, 4
    x = torch.randn(2, t * c, 11, 10, dtype=torch.float64, generator=g)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(t * o, c, *kernel, dtype=torch.float64, generator=g)
    b = torch.randn(t * o, dtype=torch.float64, generator=g)
    args = (stride, padding, dilation)
    for precision in ("fp64", "bf16"):
        leaves = [v.clone().requires_grad_() for v in (x, w, b)]
        twins = [v.clone().requires_grad_() for v in (x, w, b)]
        if precision == "bf16":
            leaves = [v.detach().float().requires_grad_() for v in leaves]
            twins = [v.detach().float().requires_grad_() for v in twins]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            y = task_conv_gemm(*leaves, *args, t)
            y_ref = F.conv2d(*twins, *args, t)
        assert y.dtype == y_ref.dtype and y.is_contiguous()
        up = torch.randn(y.shape, dtype=torch.float64, generator=g).to(y.dtype)
        grads = torch.autograd.grad(y, leaves, up)
        want = torch.autograd.grad(y_ref, twins, up)
        tol = 1e-12 if precision == "fp64" else 2e-2
        assert _rel(y.float(), y_ref.float()) <= tol
        for got, ref in zip(grads, want):
            assert got.dtype == ref.dtype and _rel(got.float(), ref.float()) < tol
    with pytest.raises(ValueError, match="groups == 1"):
        task_conv_gemm(x, w[:, :2], None, *args, t)


def test_weight_mixture_gradients_are_exact():
    from automtl_cli.compiler.supermodel.conv import mix_weights

    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(3, dtype=torch.float64, generator=g, requires_grad=True) for _ in "ab")
    shared = torch.randn(4, 2, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    task = torch.randn(3, 4, 2, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(mix_weights, (a, b, shared, task))
    want = a.view(3, 1, 1, 1, 1) * shared + b.view(3, 1, 1, 1, 1) * task
    torch.testing.assert_close(mix_weights(a, b, shared, task), want)
    from automtl_cli.compiler.supermodel.conv import mix_weights_split

    assert torch.autograd.gradcheck(mix_weights_split, (a, b, shared, task))
    torch.testing.assert_close(torch.stack(mix_weights_split(a, b, shared, task)), want)


@pytest.mark.parametrize("policy", ["shared", "specific", "random"])
def test_hard_inference_shortcuts_compute_the_same(policy):
    """Without gradients a one-hot stage skips the mixture and unchosen branches; with them it
    does not: both give the same features."""
    g = spec_graph("resnet18_w8")
    model = perturbed_supermodel(g, SearchSpace(TASKS3), seed=2).eval()
    s = len(g.searchable)
    choices = {"shared": torch.zeros(s, 3, dtype=torch.long),
               "specific": torch.ones(s, 3, dtype=torch.long),
               "random": torch.randint(0, 3, (s, 3),
                                       generator=torch.Generator().manual_seed(1))}[policy]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fast = model(x, "hard", policy=choices)
    slow = model(x, "hard", policy=choices)
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-5, atol=1e-5)


def _moved_statistics(model):
    """Running statistics away from their initial values, so that a BN read from the wrong
    task or the wrong copy shows."""
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("mean"):
                buf.normal_(0, 0.2)
            elif name.endswith("var"):
                buf.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("skip", ["reference", "cheap"])
@pytest.mark.parametrize("bn", ["task", "follow", "shared"])
def test_hard_inference_of_one_batch_equals_the_stacked_execution(bn, skip):
    """One batch for every task under a fixed policy runs as the derived network on the
    model's own tensors; the same batch given once per task runs the stacked execution."""
    g = spec_graph("resnet18_w8")
    model = _moved_statistics(perturbed_supermodel(g, SearchSpace(TASKS3, bn, skip), seed=4))
    model = model.double().eval()
    s = len(g.searchable)
    seed = {"task": 1, "follow": 2, "shared": 3}[bn] + 3 * (skip == "cheap")
    policy = torch.randint(0, 3, (s, 3), generator=torch.Generator().manual_seed(seed))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        borrowed = model(x, "hard", policy=policy)
        stacked = model(x.expand(3, *x.shape), "hard", policy=policy)
    assert model.__dict__["_hard_networks"]
    torch.testing.assert_close(borrowed, stacked, rtol=1e-10, atol=1e-10)


def test_hard_inference_follows_the_tensors_it_borrows():
    """In-place updates (an optimiser step) show at once; a move rebuilds; copies and
    checkpoints never carry the borrowed network."""
    g = spec_graph("resnet18_w8")
    model = _moved_statistics(perturbed_supermodel(g, SearchSpace(TASKS3))).eval()
    keys = set(model.state_dict())
    s = len(g.searchable)
    policy = torch.randint(0, 3, (s, 3), generator=torch.Generator().manual_seed(5))
    x = torch.randn(2, 3, 32, 32)

    def both(x):
        with torch.no_grad():
            return (model(x, "hard", policy=policy),
                    model(x.expand(3, *x.shape), "hard", policy=policy))

    before, _ = both(x)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.25)
        for name, buf in model.named_buffers():
            if name.endswith("var"):
                buf.mul_(2.0)
    after, stacked = both(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, stacked, rtol=1e-5, atol=1e-5)
    other = _moved_statistics(perturbed_supermodel(g, SearchSpace(TASKS3), seed=9)).eval()
    state = {k: v.clone() for k, v in other.state_dict().items()}
    with torch.no_grad():
        want = other(x.expand(3, *x.shape), "hard", policy=policy)
        tensors = {**dict(other.named_parameters()), **dict(other.named_buffers())}
        substituted = torch.func.functional_call(model, tensors, (x, "hard"),
                                                 {"policy": policy})
    torch.testing.assert_close(substituted, want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model(x, "hard", policy=policy)  # built again on the model's own tensors
        model(x, "hard", policy=policy.flip(0))  # a second policy's network, kept
    assert len(model.__dict__["_hard_networks"]) == 2
    model.load_state_dict(state, assign=True)  # new tensors, not copies into the old ones
    after, stacked = both(x)
    torch.testing.assert_close(after, stacked, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after, want, rtol=1e-5, atol=1e-5)
    assert len(model.__dict__["_hard_networks"]) == 1  # the stale one was let go
    for p in model.parameters():
        p.data = p.data * 0.5
    after, stacked = both(x)
    torch.testing.assert_close(after, stacked, rtol=1e-5, atol=1e-5)
    model.graph_module.double()  # a move below the supermodel
    after, stacked = both(x.double())
    assert after.dtype == torch.float64
    torch.testing.assert_close(after, stacked, rtol=1e-10, atol=1e-10)
    assert "_hard_networks" not in copy.deepcopy(model).__dict__
    assert set(model.state_dict()) == keys


def test_hard_inference_keeps_the_networks_of_a_few_policies():
    g = spec_graph("resnet18_w8")
    model = build_supermodel(g, SearchSpace(TASKS3)).eval()
    s = len(g.searchable)
    policies = [torch.randint(0, 3, (s, 3), generator=torch.Generator().manual_seed(k))
                for k in range(model.HARD_NETWORKS_KEPT + 1)]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model(x, "hard", policy=policies[0])
        first = model._hard_network(policies[0].tolist())
        model(x, "hard", policy=policies[1])
        assert model._hard_network(policies[0].tolist()) is first  # alternating: reused
        for p in policies[2:]:  # one more than is kept: the least recently used goes
            model(x, "hard", policy=p)
        kept = model.__dict__["_hard_networks"]
        assert len(kept) == model.HARD_NETWORKS_KEPT
        assert tuple(map(tuple, policies[0].tolist())) in kept  # used after policies[1]
        assert tuple(map(tuple, policies[1].tolist())) not in kept


def test_hard_inference_of_unusual_graphs(tmp_path):
    """A BatchNorm after an InnerProduct (a 2-D value), layers whose module names coincide,
    and a task named like the suffix of a batched call."""
    path = tmp_path / "odd.prototxt"
    path.write_text(
        'name: "odd" layer { name: "data" type: "Input" top: "data" input_param { shape { '
        'dim: 2 dim: 3 dim: 8 dim: 8 } } } '
        'layer { name: "c.a" type: "Convolution" bottom: "data" top: "x1" convolution_param { '
        'num_output: 4 bias_term: false pad: 1 kernel_size: 3 } } '
        'layer { name: "bn" type: "BatchNorm" bottom: "x1" top: "x2" } '
        'layer { name: "c/a" type: "Convolution" bottom: "x2" top: "x3" convolution_param { '
        'num_output: 4 bias_term: false pad: 1 kernel_size: 3 } } '
        'layer { name: "fc" type: "InnerProduct" bottom: "x3" top: "x4" inner_product_param { '
        'num_output: 5 } } '
        'layer { name: "bn2" type: "BatchNorm" bottom: "x4" top: "x5" }')
    g = _graph(path, (2, 3, 8, 8))
    for bn in ("task", "follow", "shared"):
        space = SearchSpace(("seg", "batched", "tasks"), bn)
        model = _moved_statistics(perturbed_supermodel(g, space, seed=1)).double().eval()
        x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
        # the last: under --bn task the second layer runs batched for two tasks while the
        # third task's copy is named like that call ("c_a__batched")
        for policy in ([[0, 0, 1], [0, 0, 1]], [[1, 0, 2], [0, 1, 1]], [[0, 0, 0], [0, 1, 0]]):
            policy = torch.tensor(policy)
            with torch.no_grad():
                borrowed = model(x, "hard", policy=policy)
                stacked = model(x.expand(3, *x.shape), "hard", policy=policy)
            torch.testing.assert_close(borrowed, stacked, rtol=1e-10, atol=1e-10)
        assert len(model.__dict__["_hard_networks"]) == 3


def test_hard_inference_under_hooks_compile_and_replicas():
    """A hook on a node module (prune, weight_norm) keeps the stacked path, which runs it;
    torch.compile traces the borrowed network; a DataParallel replica borrows its own."""
    g = spec_graph("resnet18_w8")
    model = perturbed_supermodel(g, SearchSpace(TASKS3)).eval()
    s = len(g.searchable)
    policy = torch.randint(0, 3, (s, 3), generator=torch.Generator().manual_seed(6))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        stacked = model(x.expand(3, *x.shape), "hard", policy=policy)
        compiled = torch.compile(model, backend="eager")(x, "hard", policy=policy)
        torch.testing.assert_close(compiled, stacked, rtol=1e-5, atol=1e-5)
        assert model.__dict__["_hard_networks"]
        replica = model._replicate_for_data_parallel()
        assert "_hard_networks" not in replica.__dict__ and model.__dict__["_hard_networks"]
        seen = []
        handle = model.search_nodes[1].register_forward_hook(lambda *_: seen.append(1))
        hooked = model(x, "hard", policy=policy)
        handle.remove()
    assert seen == [1]
    torch.testing.assert_close(hooked, stacked, rtol=1e-5, atol=1e-5)


def test_hard_inference_runs_a_shared_prefix_once():
    """Under `--bn follow` the tasks' all-shared first half is one computation, not T."""
    g = spec_graph("resnet18_w8")
    model = build_supermodel(g, SearchSpace(TASKS3, "follow")).eval()
    s = len(g.searchable)
    policy = torch.zeros(s, 3, dtype=torch.long)
    policy[s // 2:] = 1
    calls = [0] * s
    batches = set()

    def count(module, inputs, output, i):
        calls[i] += 1
        batches.add(inputs[0].shape[0])

    for i, m in enumerate(model.search_nodes):
        m.shared.register_forward_hook(lambda *a, i=i: count(*a, i))
    with torch.no_grad():
        y = model(torch.randn(2, 3, 32, 32), "hard", policy=policy)
    assert calls == [1] * (s // 2) + [0] * (s - s // 2)
    assert batches == {2}  # one task's batch: not three paths in one call
    assert y.shape[:2] == (2, 3)


def test_tasks_sharing_a_convolution_on_their_own_activations_run_it_as_one_call(device):
    """Under `--bn task` all-shared paths part at the first BN; each later shared convolution
    then sees T activations, and runs them as one call where a task's output is small."""
    from automtl_cli.compiler.derived import TaskBatched
    from automtl_cli.compiler.supermodel.conv import outs_shape

    g = spec_graph("resnet18_w8", (4, 3, 64, 64))
    dtype = _dtype(device)
    model = _moved_statistics(perturbed_supermodel(g, SearchSpace(TASKS3, "task"))).eval()
    model = model.to(device, dtype)
    s = len(g.searchable)
    policy = torch.zeros(s, 3, dtype=torch.long)
    calls = [0] * s
    for i, m in enumerate(model.search_nodes):
        m.shared.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    x = torch.randn(4, 3, 64, 64, device=device, dtype=dtype)
    with torch.no_grad():
        borrowed = model(x, "hard", policy=policy)
        want = [0] * s
        for i, node in enumerate(g.searchable):  # what each layer's output size asks for
            _, _, h, w = g.shape_of(node.inputs[0])
            ho, wo = outs_shape(model.search_nodes[i].shared, h, w)
            small = 4 * ho * wo <= TaskBatched.PIXELS_PER_TASK or device.type != "cpu"
            want[i] = 1 if i == 0 or small else 3
        assert calls == want and 1 in want[1:]
        assert 3 in want or device.type != "cpu"  # on the CPU both kinds of layer occur
        stacked = model(x.expand(3, *x.shape), "hard", policy=policy)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(borrowed, stacked, rtol=tol, atol=tol)
    conv = model.search_nodes[-1].shared
    xs = [torch.randn(1, conv.in_channels, 4, 4, device=device, dtype=dtype) for _ in range(3)]
    before = calls[-1]
    torch.testing.assert_close(TaskBatched(conv)(*xs), tuple(conv(v) for v in xs))
    assert calls[-1] == before + 3 + 3  # with gradients: one call per task


def test_weight_mixture_backward_takes_any_incoming_gradient():
    from automtl_cli.compiler.supermodel.conv import mix_weights

    shared = torch.randn(4, 2, 3, 3, requires_grad=True)
    task = torch.randn(3, 4, 2, 3, 3, requires_grad=True)
    a, b = torch.rand(3), torch.tensor([0.5, 1.0, 2.0])
    mix_weights(a, b, shared, task).sum().backward()  # an expanded (stride-0) gradient
    torch.testing.assert_close(task.grad, b.view(3, 1, 1, 1, 1).expand_as(task))
