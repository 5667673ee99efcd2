"""Constant folding: ONNX nodes whose inputs are all known are computed here, with numpy.

Exporters spell a static reshape as a little program over the input's shape (`Shape`, `Gather`,
`Unsqueeze`, `Concat`, ...), and write scalars as `Constant` nodes. None of that is a layer: the
converter evaluates it at the input size being compiled (so a rebuild at the data's size gets the
right targets) and hands the layers plain arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["FOLDERS", "Unsupported", "constant_of"]


class Unsupported(Exception):
    """An op outside the table, or a value its kind cannot express (the message says which)."""


Folder = Callable[[dict[str, Any], list[np.ndarray | None]], np.ndarray]


def constant_of(attrs: dict[str, Any], onnx_module: Any) -> np.ndarray:
    """The value of a `Constant` node, from whichever attribute holds it."""
    if "value" in attrs:
        return onnx_module.numpy_helper.to_array(attrs["value"])
    for name, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                        ("value_int", np.int64), ("value_ints", np.int64)):
        if name in attrs:
            return np.asarray(attrs[name], dtype=dtype)
    raise Unsupported(f"a Constant with {', '.join(attrs) or 'no value'} (only numeric values)")


def _axes(attrs: dict[str, Any], inputs: list[np.ndarray | None], index: int) -> list[int] | None:
    """`axes` from the attribute (older opsets) or from input `index` (newer)."""
    if len(inputs) > index and inputs[index] is not None:
        return [int(a) for a in np.asarray(inputs[index]).reshape(-1)]
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    return None


def _unsqueeze(attrs: dict[str, Any], xs: list[np.ndarray | None]) -> np.ndarray:
    x, axes = xs[0], _axes(attrs, xs, 1) or []
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = np.expand_dims(x, a)
    return x


def _squeeze(attrs: dict[str, Any], xs: list[np.ndarray | None]) -> np.ndarray:
    axes = _axes(attrs, xs, 1)
    x = xs[0]
    return np.squeeze(x) if axes is None else np.squeeze(x, tuple(a % x.ndim for a in axes))


def _slice(attrs: dict[str, Any], xs: list[np.ndarray | None]) -> np.ndarray:
    x = xs[0]
    if len(xs) > 1:  # opset 10 on: starts, ends, axes, steps are inputs
        starts, ends = list(xs[1]), list(xs[2])
        axes = list(xs[3]) if len(xs) > 3 and xs[3] is not None else list(range(len(starts)))
        steps = list(xs[4]) if len(xs) > 4 and xs[4] is not None else [1] * len(starts)
    else:
        starts, ends = list(attrs["starts"]), list(attrs["ends"])
        axes = list(attrs.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[int(a)] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


def reshape_target(shape: tuple[int, ...], target: list[int], allowzero: bool = False
                   ) -> tuple[int, ...]:
    """ONNX Reshape's target with its 0 (copy) and -1 (infer) resolved."""
    out = [shape[i] if d == 0 and not allowzero else d for i, d in enumerate(target)]
    if out.count(-1) > 1:
        raise Unsupported(f"Reshape to {target}: more than one -1")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        total = int(np.prod(shape))
        if known == 0 or total % known:
            raise Unsupported(f"Reshape of {list(shape)} to {target}: sizes do not divide")
        out[out.index(-1)] = total // known
    if int(np.prod(out)) != int(np.prod(shape)):
        raise Unsupported(f"Reshape of {list(shape)} to {target}: the sizes differ")
    return tuple(int(d) for d in out)


def _reshape(attrs: dict[str, Any], xs: list[np.ndarray | None]) -> np.ndarray:
    target = reshape_target(xs[0].shape, [int(d) for d in xs[1]], bool(attrs.get("allowzero")))
    return xs[0].reshape(target)


def _div(attrs: dict[str, Any], xs: list[np.ndarray | None]) -> np.ndarray:
    a, b = xs[0], xs[1]
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        return np.trunc(a / b).astype(a.dtype)  # ONNX's integer division truncates
    return a / b


def _cast(attrs: dict[str, Any], xs: list[np.ndarray | None]) -> np.ndarray:
    import onnx  # the converter has required it already

    return xs[0].astype(onnx.helper.tensor_dtype_to_np_dtype(int(attrs["to"])))


def _constant_of_shape(attrs: dict[str, Any], xs: list[np.ndarray | None]) -> np.ndarray:
    import onnx

    value = onnx.numpy_helper.to_array(attrs["value"]) if "value" in attrs else \
        np.zeros(1, np.float32)
    return np.full([int(d) for d in xs[0]], value.reshape(-1)[0], dtype=value.dtype)


def _binary(op: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Folder:
    return lambda attrs, xs: np.asarray(op(xs[0], xs[1])).astype(
        np.result_type(xs[0], xs[1]))


FOLDERS: dict[str, Folder] = {
    "Identity": lambda a, xs: xs[0],
    "Shape": lambda a, xs: np.asarray(xs[0].shape[a.get("start", 0):a.get("end")], np.int64),
    "Cast": _cast,
    "Gather": lambda a, xs: np.take(xs[0], xs[1], axis=int(a.get("axis", 0))),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda a, xs: np.concatenate([np.atleast_1d(x) for x in xs], int(a["axis"])),
    "Slice": _slice,
    "Reshape": _reshape,
    "Transpose": lambda a, xs: np.transpose(xs[0], a.get("perm")),
    "Add": _binary(np.add), "Sub": _binary(np.subtract), "Mul": _binary(np.multiply),
    "Div": _div,
    "Floor": lambda a, xs: np.floor(xs[0]), "Ceil": lambda a, xs: np.ceil(xs[0]),
    "Sqrt": lambda a, xs: np.sqrt(xs[0]),
    "ConstantOfShape": _constant_of_shape,
}
