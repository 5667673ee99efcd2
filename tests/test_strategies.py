"""The compiler's strategy registries (`--bn`, `--skip`, the forward stage) and the modules'
per-task accessors that the derived tree and the export read; the registry-wide checks cover
the task types and loss kinds too (their own rules: tests/test_task_types.py).

Tests over a whole registry are parametrised over it, so a new choice is checked by them without
a line here; each choice's own rule has one explicit case below.
"""

from __future__ import annotations

import pytest
import torch

from automtl_cli.compiler.space import SearchSpace, follows_searchable
from automtl_cli.compiler.strategies import (
    BN_MODES,
    SKIP_MODES,
    STAGES,
    BnMode,
    SkipMode,
    Stage,
)
from automtl_cli.compiler.supermodel import SearchBatchNorm, SearchConv, gumbel_noise
from automtl_cli.frontend.build import CompileOptions, build_graph
from automtl_cli.tasks.loss_kinds import LOSS_KINDS
from automtl_cli.tasks.types import TASK_TYPE_STRATEGIES

from conftest import ROOT, perturbed_supermodel

REGISTRIES = [BN_MODES, SKIP_MODES, STAGES, TASK_TYPE_STRATEGIES, LOSS_KINDS]
TASKS = ("seg", "depth")


def _graph():
    path = ROOT / "specs" / "resnet18_w8.prototxt"
    return build_graph(path, CompileOptions(input_shapes={None: (2, 3, 32, 32)})).graph


# --------------------------------------------------------------------------- every registry

@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.axis)
def test_every_choice_has_one_strategy_named_after_it(registry):
    for member in registry.choices:
        strategy = registry.get(member.value)
        assert strategy.name is member
        assert registry.get(member) is strategy


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.axis)
def test_a_strategy_passes_through_get(registry):
    for member in registry.choices:
        strategy = registry.get(member)
        assert registry.get(strategy) is strategy


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.axis)
def test_an_unknown_name_lists_the_choices(registry):
    with pytest.raises(ValueError) as info:
        registry.get("nonesuch")
    assert str(info.value) == (f"{registry.axis}: 'nonesuch' is not one of "
                               f"{', '.join(registry.choices.values())}")


@pytest.mark.parametrize("command", ["compile", "run"])
def test_cli_choices_come_from_the_enums(command):
    from automtl_cli.cli.main import cli

    params = {p.name: p for p in cli.get_command(None, command).params}
    assert tuple(params["bn"].type.choices) == BnMode.values()
    assert tuple(params["skip"].type.choices) == SkipMode.values()


def test_search_space_stores_plain_strings():
    space = SearchSpace(TASKS, BnMode.FOLLOW, SkipMode.CHEAP)
    assert type(space.bn) is str and type(space.skip) is str
    assert space.to_dict() == {"tasks": list(TASKS), "bn": "follow", "skip": "cheap"}
    assert space.bn_strategy is BN_MODES.get("follow")


# --------------------------------------------------------------------------- --bn

# (task copies after a search node, elsewhere; uses its copy after shared, specific, skip, none)
BN_RULES = {
    "task": (True, True, (True, True, True, True)),
    "follow": (True, False, (False, True, True, False)),
    "shared": (False, False, (False, False, False, False)),
}


@pytest.mark.parametrize("mode", BnMode.values())
def test_bn_rule(mode):
    strategy = BN_MODES.get(mode)
    after, elsewhere, uses = BN_RULES[mode]
    assert strategy.has_task_copies(True) is after
    assert strategy.has_task_copies(False) is elsewhere
    assert tuple(strategy.uses_task_copy(c) for c in (0, 1, 2, None)) == uses


@pytest.mark.parametrize("mode", BnMode.values())
def test_bn_uses_a_task_copy_only_where_it_has_one(mode):
    strategy = BN_MODES.get(mode)
    for choice in (0, 1, 2):
        assert not strategy.uses_task_copy(choice) or strategy.has_task_copies(True)
    assert not strategy.uses_task_copy(None) or strategy.has_task_copies(False)


@pytest.mark.parametrize("mode", BnMode.values())
def test_bn_blend_is_a_weight_per_task(mode):
    strategy = BN_MODES.get(mode)
    pi = torch.softmax(torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(0)), -1)
    for stage in STAGES.choices:
        a = torch.as_tensor(strategy.blend(pi, STAGES.get(stage), 1))
        assert a.dim() == 0 or tuple(a.shape) == (2,)
        assert ((a >= 0) & (a <= 1)).all()


def test_bn_follow_blends_the_shared_branch_weight():
    pi = torch.softmax(torch.randn(4, 2, 3), -1)
    assert torch.equal(BN_MODES.get("follow").blend(pi, STAGES.get("soft"), 1), pi[1, :, 0])
    assert BN_MODES.get("task").blend(pi, STAGES.get("warmup"), None) == 0.5
    assert BN_MODES.get("task").blend(pi, STAGES.get("soft"), None) == 0.0


# --------------------------------------------------------------------------- stages

@pytest.mark.parametrize("stage", Stage.values())
def test_every_stage_gives_branch_weights_on_the_simplex(stage):
    model = perturbed_supermodel(_graph(), SearchSpace(TASKS))
    s = len(model.search_names)
    pi = model.branch_weights(stage, tau=0.5, noise=gumbel_noise((s, 2, 3), seed=1, step=0))
    assert tuple(pi.shape) == (s, 2, 3)
    assert (pi >= 0).all()
    torch.testing.assert_close(pi.sum(-1), torch.ones(s, 2))


def _model_and_noise(seed: int):
    """A supermodel with a policy away from uniform, and Gumbel noise of its policy's shape."""
    model = perturbed_supermodel(_graph(), SearchSpace(TASKS))
    with torch.no_grad():
        for m in model.search_nodes:
            m.policy.normal_()
    return model, gumbel_noise((*model.policy_shape, 3), seed=seed, step=0)


def test_stage_rules():
    model, noise = _model_and_noise(seed=2)
    s = len(model.search_names)
    soft = torch.softmax((model.logits() + noise) / 0.5, -1)
    assert (model.branch_weights("warmup") == 1 / 3).all()
    torch.testing.assert_close(model.branch_weights("soft", tau=0.5, noise=noise), soft)
    gdas = model.branch_weights(Stage.GDAS, tau=0.5, noise=noise)
    assert torch.equal(gdas.detach().argmax(-1), soft.argmax(-1)) and set(gdas.unique().tolist()) \
        <= {0.0, 1.0}
    hard = model.branch_weights("hard")
    assert torch.equal(hard.argmax(-1), model.logits().argmax(-1))
    with pytest.raises(ValueError, match=r"a policy must be"):
        model.branch_weights("hard", policy=torch.zeros(s + 1, 2, dtype=torch.long))
    assert STAGES.get("gdas").sampled_only and STAGES.get("warmup").averages


def test_darts_is_the_noiseless_relaxation():
    model, noise = _model_and_noise(seed=4)
    pi = model.branch_weights("darts", tau=0.7, noise=noise)  # the noise is not used
    torch.testing.assert_close(pi, torch.softmax(model.logits() / 0.7, -1))
    x = torch.randn(2, 2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        fused = model(x, "darts", tau=0.7)
        for t, y in enumerate(model.forward_reference(x, "darts", tau=0.7)):
            torch.testing.assert_close(fused[:, t], y, rtol=1e-4, atol=1e-4)
    model.train()
    model(x, "darts").square().mean().backward()
    assert all(m.policy.grad is not None and m.policy.grad.abs().sum() > 0
               for m in model.search_nodes)


# --------------------------------------------------------------------------- accessors

@pytest.mark.parametrize("bn", BnMode.values())
def test_one_tasks_modules_compute_what_the_supermodel_computes_for_it(bn):
    g = _graph()
    model = perturbed_supermodel(g, SearchSpace(TASKS, bn)).eval()
    follows = follows_searchable(g)
    x = torch.randn(2, 8, 16, 16, generator=torch.Generator().manual_seed(3))
    checked = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SearchConv):
                cin = m.shared.in_channels
                xi = torch.randn(2, cin, 16, 16)
                for t in range(2):
                    conv = m.shared
                    torch.testing.assert_close(m.task_conv(t)(xi), torch.nn.functional.conv2d(
                        xi, m.task_weight[t], None, conv.stride, conv.padding, conv.dilation,
                        conv.groups))
                    one = m.skip.for_task(t).eval()  # a fresh module starts in training mode
                    torch.testing.assert_close(one(xi), m.skip.forward_task(xi, t))
                    if m.skip.kind == "conv":
                        conv, norm = m.skip.task_layers(t)
                        torch.testing.assert_close(norm.eval()(conv(xi)),
                                                   m.skip.forward_task(xi, t))
                torch.testing.assert_close(m.shared_conv()(xi), m.shared(xi))
                checked += 1
            elif isinstance(m, SearchBatchNorm):
                c = m.shared.num_features
                xi = x[:, :c] if c <= 8 else torch.randn(2, c, 8, 8)
                assert (m.follows is not None) == (m.layer in follows)
                for t in range(2):
                    one_pi = torch.zeros(len(model.search_names), 2, 3)
                    one_pi[..., 1] = 1.0  # specific everywhere
                    want = m.forward_task(xi, t, one_pi, STAGES.get("hard"))
                    choice = None if m.follows is None else 1
                    torch.testing.assert_close(m.batchnorm_for(t, choice)(xi), want)
                checked += 1
    assert checked > 0
