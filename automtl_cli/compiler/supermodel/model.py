"""The supermodel itself: the backbone's search space for T tasks as one fx GraphModule.

`build_supermodel` materialises the weights from a seed; `Supermodel.forward` runs every task in
one pass and `forward_reference` the reference's way (one task at a time, every branch computed);
`extract_backbone_state` reads the plain backbone one task sees under the all-shared policy.
Hard inference of one batch for every task (eval mode, no gradients, a given policy) runs as
the derived network of that policy on the supermodel's own tensors (`compiler/derived.py`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from automtl_cli.compiler.backbone import bind_outputs, module_name
from automtl_cli.compiler.space import SearchSpace, follows_searchable
from automtl_cli.compiler.strategies.stage import STAGES, Stage, StageStrategy
from automtl_cli.compiler.supermodel.batchnorm import SearchBatchNorm
from automtl_cli.compiler.supermodel.conv import SearchConv
from automtl_cli.compiler.supermodel.shared import Elementwise, Folded
from automtl_cli.frontend.ir import Graph, Node
from automtl_cli.frontend.ops import LAYER_KINDS

__all__ = ["NodeWeights", "Supermodel", "build_supermodel", "extract_backbone_state",
           "load_backbone_weights"]

# A front end's pretrained weights: node name → the state dict of that node's own op module.
NodeWeights = dict[str, dict[str, torch.Tensor]]


class Supermodel(nn.Module):
    """Backbone search space for T tasks. `forward` returns features as `[N, T, C, H, W]`."""

    def __init__(self, graph: Graph, space: SearchSpace) -> None:
        super().__init__()
        self.graph, self.space = graph, space
        self.tasks = space.tasks
        t = len(space.tasks)
        shapes = graph.value_shapes()
        follows = follows_searchable(graph)
        index_of: dict[str, int] = {}
        layers = nn.Module()
        fx_graph = fx.Graph()
        x_in = fx_graph.placeholder("x")
        pi = fx_graph.placeholder("pi")
        stage = fx_graph.placeholder("stage")
        if len(graph.inputs) != 1:
            raise ValueError("a supermodel needs a backbone with exactly one input")
        env = {next(iter(graph.inputs)): x_in}
        self.node_modules: list[tuple[Node, str]] = []
        used: set[str] = set()
        for node in graph.nodes:
            in_shapes = [shapes[v] for v in node.inputs]
            name = module_name(node.name)
            while name in used:
                name += "_"
            used.add(name)
            args: tuple
            if node.searchable:
                index_of[node.name] = len(index_of)
                module = SearchConv(node, in_shapes[0], index_of[node.name], space)
                args = (env[node.inputs[0]], pi, stage)
            elif LAYER_KINDS[node.type].batch_statistics:
                src = follows.get(node.name)
                module = SearchBatchNorm(node, space, index_of[src] if src else None)
                args = (env[node.inputs[0]], pi, stage)
            else:
                kind = LAYER_KINDS[node.type]
                op = kind.build(node.attrs, in_shapes)
                conflict = kind.task_stacking_conflict(node.attrs, in_shapes)
                if conflict:
                    raise ValueError(f"layer {node.name!r}: {conflict}")
                module = Elementwise(op) if kind.elementwise else Folded(op, t)
                args = tuple(env[v] for v in node.inputs)
            layers.add_module(name, module)
            self.node_modules.append((node, name))
            bind_outputs(fx_graph, env, node.outputs, fx_graph.call_module(name, args))
        fx_graph.output(env[graph.output])
        self.graph_module = fx.GraphModule(layers, fx_graph,
                                           class_name=f"Supermodel_{module_name(graph.name)}")
        self.search_names = [name for node, name in self.node_modules if node.searchable]
        # plain lists (not registered twice): the hot path reads them every step
        self._node_module_list = [self.graph_module.get_submodule(n) for _, n in self.node_modules]
        self._search_modules = [m for (node, _), m in zip(self.node_modules,
                                                          self._node_module_list)
                                if node.searchable]
        self.register_state_dict_post_hook(_flatten_graph_prefix)
        self.register_load_state_dict_pre_hook(_add_graph_prefix)

    # ------------------------------------------------------------------ branch weights

    @property
    def search_nodes(self) -> list[SearchConv]:
        return self._search_modules

    def logits(self) -> torch.Tensor:
        """All policy logits as one `[S, T, 3]` tensor (a view-free stack of S small tensors)."""
        return torch.stack([m.policy for m in self.search_nodes])

    @property
    def policy_shape(self) -> tuple[int, int]:
        """(S, T): search nodes × tasks."""
        return len(self.search_names), len(self.tasks)

    @property
    def policy_device(self) -> torch.device:
        return self.search_nodes[0].policy.device if self.search_nodes else torch.device("cpu")

    def branch_weights(self, stage: Stage | str | StageStrategy, *, tau: float = 1.0,
                       noise: torch.Tensor | None = None, policy: torch.Tensor | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """π, `[S, T, 3]`, as the stage makes it (`compiler/strategies/stage/`)."""
        return STAGES.get(stage).branch_weights(self, tau=tau, noise=noise, policy=policy,
                                                generator=generator)

    # ------------------------------------------------------------------ forward passes

    def stack_input(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, C, H, W]` (one batch for every task) or `[T, N, C, H, W]` → `[N, T*C, H, W]`."""
        t = len(self.tasks)
        if x.dim() == 4:
            n, c = x.shape[:2]
            return x.unsqueeze(1).expand(n, t, *x.shape[1:]).reshape(n, t * c, *x.shape[2:])
        if x.dim() == 5 and x.shape[0] == t:
            return x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])
        raise ValueError(f"input must be [N, C, H, W] or [{t}, N, C, H, W], got {list(x.shape)}")

    def forward(self, x: torch.Tensor, stage: Stage | str | StageStrategy = Stage.SOFT, *,
                tau: float = 1.0, noise: torch.Tensor | None = None,
                policy: torch.Tensor | None = None, pi: torch.Tensor | None = None
                ) -> torch.Tensor:
        stage = STAGES.get(stage)
        if pi is None:
            pi = stage.branch_weights(self, tau=tau, noise=noise, policy=policy,
                                      generator=None)
        shortcut = stage.one_hot and not torch.is_grad_enabled()
        if stage.sampled_only or shortcut:  # one host copy per step: which branches run at all
            # as Python lists: tensor ops per node cost more than the convolutions of a small
            # network in hard inference
            rows = pi.detach().argmax(-1).tolist()
            # A fixed policy over one batch for all tasks: the derived network. (A sampled
            # stage draws a new policy every batch: building would cost more than it saves.)
            if (shortcut and not stage.sampled_only and not self.training and x.dim() == 4
                    and not self._node_hooks()):
                return torch.stack(self._hard_network(rows)(x), 1)
            for node, row in zip(self.search_nodes, rows):
                node.sampled = (min(row) < 2, 2 in row)
                node.choices = tuple(row)
        y = self.graph_module(self.stack_input(x), pi, stage)
        n = y.shape[0]
        return y.view(n, len(self.tasks), -1, *y.shape[2:])

    HARD_NETWORKS_KEPT = 8  # policies whose borrowed networks are kept (a few alternate)

    def _node_hooks(self) -> bool:
        """Whether a hook sits on the model or a node module (`prune`, `weight_norm` and the
        like recompute a tensor there): the derived network would not run it."""
        return any(m._forward_hooks or m._forward_pre_hooks
                   for m in (self, self.graph_module, *self._node_module_list))

    @torch.compiler.disable  # building fx modules is not for dynamo to trace
    def _hard_network(self, rows: list[list[int]]) -> nn.Module:
        """Hard inference of one batch for every task is the derived network of the choices,
        on this model's own tensors (views, rebuilt when a tensor is replaced): a prefix the
        tasks share runs once, each task's branch on its own activations without gathering or
        stacking them. Building one costs about a forward pass; the last few are kept."""
        key = tuple(map(tuple, rows))
        kept = self.__dict__.setdefault("_hard_networks", {})  # not submodules: ours
        network = kept.pop(key, None)
        if network is None or not network.is_current():
            for stale in [k for k, net in kept.items() if not net.is_current()]:
                del kept[stale]  # they hold views of replaced tensors: let those go
            # derived builds on the supermodel: imported here, not at the top
            from automtl_cli.compiler.derived import DerivedBackbone, build_tree

            choices = {node.layer: row for node, row in zip(self.search_nodes, rows)}
            tree = build_tree(self.graph, self.space, choices)
            network = DerivedBackbone(tree, self.graph, self.space, self, borrow=True)
            while len(kept) >= self.HARD_NETWORKS_KEPT:
                kept.pop(next(iter(kept)))  # the least recently used
        kept[key] = network  # most recently used last
        return network

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_hard_networks", None)  # rebuilt on demand; never pickled or copied
        return state

    def _replicate_for_data_parallel(self) -> Supermodel:
        replica = super()._replicate_for_data_parallel()
        replica.__dict__.pop("_hard_networks", None)  # each replica borrows its own tensors
        return replica

    def forward_reference(self, x: torch.Tensor,
                          stage: Stage | str | StageStrategy = Stage.SOFT, *, tau: float = 1.0,
                          noise: torch.Tensor | None = None, policy: torch.Tensor | None = None,
                          pi: torch.Tensor | None = None, only: int | None = None
                          ) -> list[torch.Tensor]:
        """The reference's execution: one task at a time, every branch computed.

        `x` is one batch for all tasks or `[T, N, C, H, W]`; `only` runs a single task.
        """
        stage = STAGES.get(stage)
        if pi is None:
            pi = stage.branch_weights(self, tau=tau, noise=noise, policy=policy,
                                      generator=None)
        outs = []
        start = next(iter(self.graph.inputs))
        for t in range(len(self.tasks)) if only is None else (only,):
            env = {start: x[t] if x.dim() == 5 else x}
            for node, name in self.node_modules:
                module = self.graph_module.get_submodule(name)
                ins = [env[v] for v in node.inputs]
                if isinstance(module, (SearchConv, SearchBatchNorm)):
                    env[node.outputs[0]] = module.forward_task(ins[0], t, pi, stage)
                else:
                    out = module.forward_task(*ins)
                    env.update(zip(node.outputs, out if len(node.outputs) > 1 else (out,)))
            outs.append(env[self.graph.output])
        return outs


def _flatten_graph_prefix(module: Supermodel, state: dict, prefix: str, local_metadata) -> None:
    """Keys read `conv3.shared.weight`, not `graph_module.conv3.shared.weight`."""
    inner = prefix + "graph_module."
    for key in [k for k in state if k.startswith(inner)]:
        state[prefix + key[len(inner):]] = state.pop(key)


def _add_graph_prefix(module: Supermodel, state: dict, prefix: str, local_metadata, strict,
                      missing_keys, unexpected_keys, error_msgs) -> None:
    for key in [k for k in state if k.startswith(prefix)
                and not k.startswith(prefix + "graph_module.")]:
        state[prefix + "graph_module." + key[len(prefix):]] = state.pop(key)


def build_supermodel(graph: Graph, space: SearchSpace, *, seed: int = 0,
                     weights: NodeWeights | None = None,
                     device: torch.device | str | None = None) -> Supermodel:
    """Materialise the supermodel's weights from `seed` (the same seed, the same weights), then
    start every branch from the backbone's pretrained `weights` where they are given."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Supermodel(graph, space)
    if weights:
        load_backbone_weights(model, weights)
    return model.to(device) if device is not None else model


def load_backbone_weights(model: Supermodel, weights: NodeWeights) -> None:
    """The plain backbone's weights into every branch that descends from them: a convolution's
    shared op and each task copy, a BatchNorm's shared γ/β/statistics and each task's. Nodes
    without weights keep theirs; a node that shares another's parameters takes its owner's."""
    with torch.no_grad():
        for node, name in model.node_modules:
            state = weights.get(node.name) or weights.get(node.attrs.get("shares") or "")
            if not state:
                continue
            module = model.graph_module.get_submodule(name)
            target = module.shared if isinstance(module, (SearchConv, SearchBatchNorm)) \
                else module.op
            try:
                _, unexpected = target.load_state_dict(state, strict=False)
            except RuntimeError as e:  # torch lists every shape mismatch in one message
                raise ValueError(f"weights of layer {node.name!r} do not fit it: {e}") from e
            if unexpected:  # a tensor the layer lacks is a mapping bug; a missing one (a
                # .caffemodel without a Scale's blobs) keeps the seed's init
                raise ValueError(f"weights of layer {node.name!r} do not fit it: unexpected "
                                 f"{unexpected}")
            if isinstance(module, SearchConv):
                module.task_weight.copy_(module.shared.weight.expand_as(module.task_weight))
                if module.task_bias is not None:
                    module.task_bias.copy_(module.shared.bias.expand_as(module.task_bias))
            elif isinstance(module, SearchBatchNorm) and module.has_task:
                shared = module.shared
                for own, src in ((module.task_weight, shared.weight),
                                 (module.task_bias, shared.bias),
                                 (module.task_mean, shared.running_mean),
                                 (module.task_var, shared.running_var)):
                    if own is not None and src is not None:
                        own.copy_(src.expand_as(own))


def extract_backbone_state(model: Supermodel, task: int) -> dict[str, Any]:
    """Weights of the plain backbone as task `task` sees it under the all-shared policy."""
    state = {}
    for _node, name in model.node_modules:
        module = model.graph_module.get_submodule(name)
        if isinstance(module, SearchConv):
            for k, v in module.shared.state_dict().items():
                state[f"{name}.{k}"] = v
        elif isinstance(module, SearchBatchNorm):
            choice = None if module.follows is None else 0  # the all-shared policy
            for k, v in module.batchnorm_for(task, choice).state_dict().items():
                state[f"{name}.{k}"] = v
        else:
            for k, v in module.op.state_dict().items():
                state[f"{name}.{k}"] = v
    return state
