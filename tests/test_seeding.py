"""The seeding discipline: a step's draws from the global generators are a function of
(seed, loop, rank, step) alone — not of what was drawn before."""

from __future__ import annotations

import random

import numpy as np
import torch

from automtl_cli.seeding import derive_seed, seed_globals, stream_id


def _draws() -> tuple:
    return (torch.rand(4).tolist(), np.random.random(4).tolist(), random.random(),
            torch.nn.functional.dropout(torch.ones(64), 0.5, training=True).tolist())


def test_a_steps_draws_depend_on_its_keys_alone():
    seed_globals(7, stream_id("search"), 0, 12)
    first = _draws()
    torch.rand(1000)  # whatever ran before the step
    np.random.random(99)
    random.random()
    seed_globals(7, stream_id("search"), 0, 12)
    assert _draws() == first
    for other in [(8, stream_id("search"), 0, 12), (7, stream_id("finetune"), 0, 12),
                  (7, stream_id("search"), 1, 12), (7, stream_id("search"), 0, 13)]:
        seed_globals(*other)
        drawn = _draws()
        assert all(a != b for a, b in zip(drawn, first)), other  # every generator moves


def test_derived_seeds_are_stable_and_take_any_integer():
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    assert derive_seed(0, 1, 2) != derive_seed(0, 2, 1)
    assert 0 <= derive_seed(-1, 3) < 2**64  # a negative --seed works too
    assert stream_id("search") == 3035683751  # the same in every process (no hash randomisation)
