"""A plan's backbone parameters, node by node, without building its tree.

The derived tree (compiler/derived.py) counts every distinct module once. Which modules a
search node contributes depends only on that node's own choices: its shared convolution once
if any task keeps it, a copy per task that picks `specific`, a skip branch per task that skips
(nothing when the skip is parameter-free), and the BatchNorm that follows it alone, as a task
copy or once shared depending on `--bn`. Everything else costs the same in every plan. So the
count is a constant plus one term per node, which is what a size budget needs to search plans
quickly (engine/plans/budget.py); `tests/test_budget.py` checks it against the tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from automtl_cli.compiler.derived import build_tree
from automtl_cli.compiler.space import SearchSpace, follows_searchable, skip_plan
from automtl_cli.frontend.ir import Graph

__all__ = ["PlanCost"]

SHARED, SPECIFIC, SKIP = 0, 1, 2


@dataclass(frozen=True)
class PlanCost:
    """Backbone parameters of a plan = `fixed` + Σ_n node_cost(n, choices of n)."""

    nodes: tuple[str, ...]
    conv: np.ndarray  # [S] the convolution's weights (its shared op, or one task copy)
    skip: np.ndarray  # [S] one task's skip branch (0 when parameter-free)
    bn: np.ndarray  # [S] the BatchNorm that follows the node alone (0 when none)
    own_bn: tuple[bool, bool, bool]  # per branch: does a task get its own copy of that BN
    fixed: int  # everything else: the layers no choice changes

    @classmethod
    def of(cls, graph: Graph, space: SearchSpace) -> PlanCost:
        shapes = graph.value_shapes()
        searchable = graph.searchable
        index = {n.name: i for i, n in enumerate(searchable)}
        bn = np.zeros(len(searchable), dtype=np.int64)
        by_name = {n.name: n for n in graph.nodes}
        for norm, conv in follows_searchable(graph).items():
            bn[index[conv]] = by_name[norm].params
        strategy = space.bn_strategy
        cost = cls(tuple(index), np.array([n.params for n in searchable], dtype=np.int64),
                   np.array([skip_plan(n, shapes[n.inputs[0]], space.skip).params
                             for n in searchable], dtype=np.int64),
                   bn, tuple(strategy.uses_task_copy(c) for c in (SHARED, SPECIFIC, SKIP)), 0)
        # The constant part, from one plan counted exactly by the tree.
        shared = {n: [SHARED] * len(space.tasks) for n in cost.nodes}
        exact = sum(build_tree(graph, space, shared).modules().values())
        variable = int(cost.node_costs(np.zeros((len(cost.nodes), len(space.tasks)),
                                                dtype=np.int64)).sum())
        return cls(cost.nodes, cost.conv, cost.skip, cost.bn, cost.own_bn, exact - variable)

    def node_costs(self, table: np.ndarray) -> np.ndarray:
        """[S] parameters each node's choices cost, for a plan table [S, T]."""
        return self._cost(self.conv, self.skip, self.bn, np.asarray(table))

    def column_costs(self, n: int, columns: np.ndarray) -> np.ndarray:
        """[C] what node n costs with each of the columns [C, T] (a branch per task)."""
        return self._cost(self.conv[n], self.skip[n], self.bn[n], np.asarray(columns))

    def _cost(self, conv, skip, bn, rows: np.ndarray) -> np.ndarray:
        own = np.array(self.own_bn)[rows]  # [R, T]: a task's own copy of the BatchNorm
        any_shared = (rows == SHARED).any(1)
        return (conv * (any_shared + (rows == SPECIFIC).sum(1)) + skip * (rows == SKIP).sum(1)
                + bn * (own.sum(1) + (~own).any(1))).astype(np.int64)

    def backbone(self, choices: dict[str, Sequence[int]] | np.ndarray) -> int:
        """The backbone parameters of a plan (its choices by node name, or a table [S, T])."""
        table = choices if isinstance(choices, np.ndarray) else \
            np.array([list(choices[n]) for n in self.nodes], dtype=np.int64)
        return self.fixed + int(self.node_costs(table).sum())
