"""The most likely plan within a parameter budget (`derive --max-params`).

Among all plans whose backbone fits `limit` parameters, find one of highest log-probability
under the searched policy, Σ_{n,t} log softmax(α)[n, t, c_nt]. The cost is a constant plus a
term per node (compiler/plan_cost.py), so this is a multiple-choice knapsack: each node picks
one column (a branch per task). Per node only the columns no cheaper column beats are kept
(every column for up to 8 tasks; beyond, the best columns at a sweep of prices per parameter),
and a dynamic programme over the nodes keeps the (cost, log-probability) frontier of partial
plans, dropping dominated and unaffordable ones. It is exact unless the frontier outgrows
`FRONTIER` points, where it is thinned evenly. A budget the argmax plan meets returns it.
"""

from __future__ import annotations

import itertools

import numpy as np

from automtl_cli.compiler.plan_cost import SHARED, SKIP, SPECIFIC, PlanCost
from automtl_cli.errors import BadInput

__all__ = ["most_likely_within"]

EXHAUSTIVE_TASKS = 8  # 3^8 = 6,561 columns per node
FRONTIER = 20_000


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _best_at(logp: np.ndarray, cost: PlanCost, price: float) -> np.ndarray:
    """The plan [S, T] of highest log-probability minus price × parameters (per node: with
    the shared convolution and a shared BatchNorm each paid for or not)."""
    own = np.array(cost.own_bn)
    branch_cost = np.stack([cost.conv * (b == SPECIFIC) + cost.skip * (b == SKIP)
                            + cost.bn * own[b] for b in (SHARED, SPECIFIC, SKIP)], -1)  # [S, 3]
    score = logp - price * branch_cost[:, None, :]  # [S, T, 3]
    best_value = np.full(logp.shape[0], -np.inf)
    best = np.zeros(logp.shape[:2], dtype=np.int64)
    for conv_paid, shared_bn_paid in itertools.product((True, False), repeat=2):
        allowed = np.array([conv_paid and (own[SHARED] or shared_bn_paid),
                            own[SPECIFIC] or shared_bn_paid, own[SKIP] or shared_bn_paid])
        if not allowed.any():
            continue
        masked = np.where(allowed, score, -np.inf)
        choice = masked.argmax(-1)  # [S, T]
        value = np.take_along_axis(masked, choice[..., None], -1)[..., 0].sum(1)
        value = value - price * (cost.conv * conv_paid + cost.bn * shared_bn_paid)
        better = value > best_value
        best[better], best_value[better] = choice[better], value[better]
    return best


def _columns(logp: np.ndarray, cost: PlanCost) -> list[np.ndarray]:
    """Per node, the candidate columns [C, T]."""
    s, t = logp.shape[:2]
    if t <= EXHAUSTIVE_TASKS:
        every = np.array(list(itertools.product(range(3), repeat=t)), dtype=np.int64)
        return [every] * s
    plans = [_best_at(logp, cost, price) for price in [0.0, *np.geomspace(1e-12, 1e6, 400)]]
    return [np.unique(np.stack([p[n] for p in plans]), axis=0) for n in range(s)]


def _pareto(costs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Indices of the points no cheaper-or-equal point matches in value, by rising cost."""
    order = np.lexsort((-values, costs))
    best = np.maximum.accumulate(values[order])
    keep = np.ones(len(order), dtype=bool)
    keep[1:] = values[order][1:] > best[:-1]
    return order[keep]


def most_likely_within(logits: np.ndarray, cost: PlanCost, limit: int, *,
                       what: str = "the budget") -> np.ndarray:
    """[S, T] branch indices: the most likely plan whose backbone has ≤ `limit` parameters."""
    logp = _log_softmax(logits)
    argmax = logp.argmax(-1)
    if cost.backbone(argmax) <= limit:
        return argmax
    s, t = logp.shape[:2]
    options = []  # per node: (columns [C, T], costs [C], log-probabilities [C]) on its frontier
    for n, columns in enumerate(_columns(logp, cost)):
        costs = cost.column_costs(n, columns)
        values = logp[n, np.arange(t), columns].sum(-1)
        keep = _pareto(costs, values)
        options.append((columns[keep], costs[keep], values[keep]))
    budget = limit - cost.fixed
    cheapest_after = np.append(np.cumsum([o[1][0] for o in options][::-1])[::-1][1:], 0)
    if sum(o[1][0] for o in options) > budget:
        smallest = cost.fixed + sum(int(o[1][0]) for o in options)
        raise BadInput(f"{what}: the smallest backbone this search space offers has "
                       f"{smallest:,} parameters, more than the {limit:,} left for it")
    frontier_cost, frontier_value = np.zeros(1, dtype=np.int64), np.zeros(1)
    back: list[tuple[np.ndarray, np.ndarray]] = []  # per node: (parent index, column index)
    for n, (_, costs, values) in enumerate(options):
        total = (frontier_cost[:, None] + costs[None]).ravel()
        value = (frontier_value[:, None] + values[None]).ravel()
        fits = np.flatnonzero(total + cheapest_after[n] <= budget)
        keep = fits[_pareto(total[fits], value[fits])]
        if len(keep) > FRONTIER:  # thin evenly along the cost axis, keeping both ends
            keep = keep[np.unique(np.linspace(0, len(keep) - 1, FRONTIER).round().astype(int))]
        back.append((keep // len(costs), keep % len(costs)))
        frontier_cost, frontier_value = total[keep], value[keep]
    point = int(np.argmax(frontier_value))
    plan = np.zeros((s, t), dtype=np.int64)
    for n in reversed(range(s)):
        parent, column = back[n]
        plan[n] = options[n][0][column[point]]
        point = int(parent[point])
    return plan

