"""The search's clocks: which step is a policy step, and the Gumbel temperature τ.

After the warm-up, the iterations run in cycles of p policy steps (on train2) then q weight steps
(on train1). τ starts at τ₀ and is multiplied by the decay each time `every` policy steps have
been taken: the reference's 5 · 0.965^⌊k/101⌋ after k policy steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from automtl_cli.registry import Choice

__all__ = ["Alternation", "Phase", "TauSchedule"]


class Phase(Choice):
    """What one search iteration trains, and on which split."""

    WARMUP = "warmup"  # every branch averaged; weights and heads, on train
    POLICY = "policy"  # the logits, on train2
    WEIGHT = "weight"  # weights and heads, on train1

    @property
    def split(self) -> str:
        return {Phase.WARMUP: "train", Phase.POLICY: "train2", Phase.WEIGHT: "train1"}[self]


@dataclass(frozen=True)
class Alternation:
    warmup: int  # warm-up iterations before the search
    policy_steps: int  # p
    weight_steps: int  # q

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.policy_steps < 1 or self.weight_steps < 0:
            raise ValueError("warm-up ≥ 0, policy steps ≥ 1 and weight steps ≥ 0 are needed")

    def stage(self, step: int) -> Phase:
        """The phase of global iteration `step` (0-based)."""
        if step < self.warmup:
            return Phase.WARMUP
        k = (step - self.warmup) % (self.policy_steps + self.weight_steps)
        return Phase.POLICY if k < self.policy_steps else Phase.WEIGHT

    def policy_steps_before(self, step: int) -> int:
        """How many policy steps iterations [0, step) contain."""
        if step <= self.warmup:
            return 0
        cycle = self.policy_steps + self.weight_steps
        full, rest = divmod(step - self.warmup, cycle)
        return full * self.policy_steps + min(rest, self.policy_steps)

    def weight_updates(self, total: int) -> int:
        """How many of iterations [0, total) update the weights (warm-up and weight steps)."""
        return total - self.policy_steps_before(total)


@dataclass(frozen=True)
class TauSchedule:
    start: float = 5.0
    decay: float = 0.965
    every: int = 101

    def __post_init__(self) -> None:
        if self.start <= 0 or not 0 < self.decay <= 1 or self.every < 1:
            raise ValueError("τ₀ > 0, 0 < decay ≤ 1 and a period ≥ 1 are needed")

    def at(self, policy_steps_done: int) -> float:
        return self.start * self.decay ** (policy_steps_done // self.every)
