"""The multi-task supermodel: every task in one forward pass.

Layout. Activations of all T tasks travel as one tensor `[N, T*C, H, W]`, which is the same
memory as `[N, T, C, H, W]` and as `[N*T, C, H, W]`. So

* a shared layer (pooling, ReLU, Eltwise, InnerProduct, ...) runs once over the `[N*T, C, H, W]`
  view, a plain dense kernel over the stacked batch;
* a searchable convolution runs its shared op and its T task copies as ONE grouped convolution on
  the `[N, T*C, H, W]` view: convolution is linear in its weights, so π₀·(W∗x) + π₁·(W_t∗x) equals
  (π₀W + π₁W_t)∗x, and the mixture costs one convolution instead of two;
* a per-task BatchNorm is one `batch_norm` call over T*C channels (each task keeps its own
  statistics, exactly as the reference's one-task-at-a-time passes do).

The forward is generated with torch.fx: `Supermodel.graph_module.code` is straight-line code with
one call per prototxt layer. `Supermodel.forward_reference` runs the reference's way instead, one
task at a time with every branch computed separately; tests and the benchmark compare the two.

Branch weights π ([S, T, 3] for S search nodes: shared, specific, skip) come from the forward
stage (a `Stage`, one module each under `compiler/strategies/stage/`), which the modules also
receive; how BatchNorm is shared comes from the `--bn` strategy (`compiler/strategies/bn/`).

The package, one job per module: `stacking` (tensors stacked over tasks, saved under per-task
keys), `skip` (the skip branch), `conv` (the searchable convolution), `batchnorm`, `shared`
(wrappers for the layers all tasks share), `model` (the Supermodel, its build and extraction).
"""

from automtl_cli.compiler.strategies.stage import gdas_weights, gumbel_noise
from automtl_cli.compiler.supermodel.batchnorm import SearchBatchNorm
from automtl_cli.compiler.supermodel.conv import SearchConv
from automtl_cli.compiler.supermodel.model import (
    NodeWeights,
    Supermodel,
    build_supermodel,
    extract_backbone_state,
    load_backbone_weights,
)
from automtl_cli.compiler.supermodel.shared import Elementwise, Folded
from automtl_cli.compiler.supermodel.skip import SkipBranch
from automtl_cli.compiler.supermodel.stacking import TaskStacked

__all__ = ["Elementwise", "Folded", "NodeWeights", "SearchBatchNorm", "SearchConv", "SkipBranch",
           "Supermodel", "TaskStacked", "build_supermodel", "extract_backbone_state",
           "gdas_weights", "gumbel_noise", "load_backbone_weights"]
