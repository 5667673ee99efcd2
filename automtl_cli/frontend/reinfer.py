"""A graph at another input size, from the IR alone: every node's shape rule run again.

Later stages build the network at the data's input size. A file is simply read again at that
size; a source that cannot be read again (a module object handed to the Python API) keeps its
IR, and this recomputes shapes and parameter counts from the layer table, so every op kind is
described once for both.
"""

from __future__ import annotations

import dataclasses

from automtl_cli.errors import SourceError
from automtl_cli.frontend.ir import Graph, Shape
from automtl_cli.frontend.ops import LAYER_KINDS

__all__ = ["reinfer_shapes"]


def reinfer_shapes(graph: Graph, input_shape: Shape) -> Graph:
    """`graph` with its single input set to `input_shape` and every shape inferred again."""
    if len(graph.inputs) != 1:
        raise SourceError(f"re-shaping needs one input, the graph has {len(graph.inputs)}",
                          file=graph.file)
    (start,) = graph.inputs
    shapes: dict[str, Shape] = {start: tuple(input_shape)}
    nodes = []
    for node in graph.nodes:
        kind = LAYER_KINDS[node.type]
        ins = [shapes[v] for v in node.inputs]
        try:
            outs = [tuple(s) for s in kind.infer(node.attrs, ins)]
        except SourceError as e:
            raise SourceError(f"at input {list(input_shape)}: {e.message}", file=graph.file,
                              line=node.line, layer=node.name, layer_type=node.type) from e
        shapes.update(zip(node.outputs, outs))
        nodes.append(dataclasses.replace(node, shapes=outs,
                                         params=kind.count_params(node.attrs, ins)))
    out = dataclasses.replace(graph, inputs={start: tuple(input_shape)}, nodes=nodes)
    out.verify()
    return out
