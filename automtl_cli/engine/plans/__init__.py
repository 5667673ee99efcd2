"""Derive modes, one module per choice (docs/adding-a-strategy.md), and `choose`."""

from __future__ import annotations

import os

import torch

from automtl_cli.compiler.plan import Plan
from automtl_cli.engine.plans import argmax, file, fixed, sampled  # noqa: F401  (registration)
from automtl_cli.engine.plans.base import DERIVE_MODES, DeriveMode, PlanMaker, PlanRequest
from automtl_cli.errors import BadInput

__all__ = ["DERIVE_MODES", "DeriveMode", "PlanMaker", "PlanRequest", "choose"]

DERIVE_MODES.check_complete()


def choose(mode: DeriveMode | str, nodes: list[str], tasks: tuple[str, ...], *,
           logits: torch.Tensor | None = None, seed: int = 0,
           plan_file: str | os.PathLike | None = None) -> Plan:
    """The plan `mode` makes for these search nodes and tasks."""
    try:
        member = DERIVE_MODES.member(mode)
    except ValueError as e:
        raise BadInput(str(e)) from e
    maker = DERIVE_MODES.get(member)
    if maker.needs_search and logits is None:
        raise BadInput(f"--mode {member.value} needs a search checkpoint (run `automtl search`)")
    request = PlanRequest(list(nodes), tuple(tasks), logits, seed, plan_file)
    table = maker.table(request)
    return Plan(tuple(tasks), {n: [int(c) for c in table[i]] for i, n in enumerate(nodes)},
                maker.source(member, request))
