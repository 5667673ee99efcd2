"""The front end's IR: a graph of layers in SSA form, with every blob's shape.

A `Graph` is a closed, plain-data structure:

* `inputs` maps each input value to its shape (N, C, H, W, ...);
* `nodes` are in topological (file) order; each `Node` reads `inputs` and writes `outputs`, which
  are SSA value ids: a blob name the first time it is written, `name@k` when a later layer writes
  the same blob in place (Caffe's `top == bottom`);
* `meta` facts filled by the passes of `automtl_cli.frontend.passes`: output shapes, learnable
  parameter count, whether the node is a search node;
* `blobs` maps each prototxt blob name to the value id of its final version, and `outputs` are
  the values the network returns: the feature handed to the task heads (`output`), or one blob
  per task in a derived multi-task network.

Node types and attributes are those of the layer table (`automtl_cli.frontend.ops`). The graph
round-trips through `to_dict` / `from_dict` as JSON-able data, so artifacts never pickle code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Graph", "Node", "Shape", "unique_name"]

Shape = tuple[int, ...]


@dataclass(slots=True)  # a 100,000-layer file makes 100,000 of them
class Node:
    name: str  # the prototxt layer's name (BatchNorm+Scale keep the BatchNorm's)
    type: str  # a layer-table type: "Convolution", "BatchNorm", ...
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    line: int  # line of the layer in the source file
    folded: list[str] = field(default_factory=list)  # names of layers merged into this one
    shapes: list[Shape] = field(default_factory=list)  # one per output
    params: int = 0  # learnable parameters (weights, biases, affine γ/β; no running stats)
    searchable: bool = False
    depth: int = 0  # searchable convolutions on the longest path from the input, this one included

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.type, "inputs": list(self.inputs),
            "outputs": list(self.outputs), "attrs": dict(self.attrs), "line": self.line,
            "folded": list(self.folded), "shapes": [list(s) for s in self.shapes],
            "params": self.params, "searchable": self.searchable, "depth": self.depth,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        return cls(
            name=d["name"], type=d["type"], inputs=list(d["inputs"]), outputs=list(d["outputs"]),
            attrs=dict(d["attrs"]), line=int(d["line"]), folded=list(d["folded"]),
            shapes=[tuple(s) for s in d["shapes"]], params=int(d["params"]),
            searchable=bool(d["searchable"]), depth=int(d["depth"]),
        )


@dataclass
class Graph:
    name: str
    file: str
    dialect: str
    inputs: dict[str, Shape]
    nodes: list[Node]
    outputs: list[str]
    blobs: dict[str, str]  # blob name → value id of its last version
    source_layers: int = 0  # prototxt layers that made it into the graph (Input layers included)

    @property
    def output(self) -> str:
        """The single output of a backbone (the first, when there are several)."""
        return self.outputs[0]

    def shape_of(self, value: str) -> Shape:
        if value in self.inputs:
            return self.inputs[value]
        for node in self.nodes:
            if value in node.outputs:
                return node.shapes[node.outputs.index(value)]
        raise KeyError(value)

    def value_shapes(self) -> dict[str, Shape]:
        shapes = dict(self.inputs)
        for node in self.nodes:
            shapes.update(zip(node.outputs, node.shapes))
        return shapes

    @property
    def params(self) -> int:
        return sum(n.params for n in self.nodes)

    @property
    def searchable(self) -> list[Node]:
        return [n for n in self.nodes if n.searchable]

    @property
    def max_depth(self) -> int:
        return max((n.depth for n in self.nodes), default=0)

    def verify(self) -> None:
        """Check SSA form and topological order; an internal invariant, not a user error."""
        defined = set(self.inputs)
        names: set[str] = set()
        for node in self.nodes:
            if node.name in names:
                raise AssertionError(f"duplicate node {node.name!r}\n{self.format()}")
            names.add(node.name)
            for v in node.inputs:
                if v not in defined:
                    raise AssertionError(f"{node.name}: reads undefined {v!r}\n{self.format()}")
            for v in node.outputs:
                if v in defined:
                    raise AssertionError(f"{node.name}: redefines {v!r}\n{self.format()}")
                defined.add(v)
            if len(node.shapes) != len(node.outputs):
                raise AssertionError(f"{node.name}: {len(node.shapes)} shapes for "
                                     f"{len(node.outputs)} outputs")
        for out in self.outputs:
            if out not in defined:
                raise AssertionError(f"output {out!r} undefined\n{self.format()}")

    def format(self) -> str:
        lines = [f"graph {self.name} ({self.dialect}) inputs="
                 + ", ".join(f"{k}{list(v)}" for k, v in self.inputs.items())]
        for n in self.nodes:
            shapes = ", ".join(str(list(s)) for s in n.shapes)
            lines.append(f"  {', '.join(n.outputs)} = {n.type}[{n.name}]"
                         f"({', '.join(n.inputs)}) -> {shapes}")
        lines.append(f"  return {', '.join(self.outputs)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "file": self.file, "dialect": self.dialect,
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "nodes": [n.to_dict() for n in self.nodes], "outputs": list(self.outputs),
            "blobs": dict(self.blobs), "source_layers": self.source_layers,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Graph:
        return cls(
            name=d["name"], file=d["file"], dialect=d["dialect"],
            inputs={k: tuple(v) for k, v in d["inputs"].items()},
            nodes=[Node.from_dict(n) for n in d["nodes"]], outputs=list(d["outputs"]),
            blobs=dict(d["blobs"]), source_layers=int(d["source_layers"]),
        )


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or `name#k` with the smallest k not yet taken; recorded as taken (front ends
    name nodes after modules or ONNX nodes, which may repeat)."""
    base, k = name, 0
    while name in taken:
        k += 1
        name = f"{base}#{k}"
    taken.add(name)
    return name
