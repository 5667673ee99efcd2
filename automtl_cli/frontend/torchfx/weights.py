"""`--weights FILE` for a PyTorch module: a state dict, read as data, loaded into the module.

`.pt`/`.pth` files are read with `weights_only=True` (a file can never run code); `.safetensors`
needs the `safetensors` extra. Training checkpoints that wrap the state dict (`{"state_dict":
...}`, `{"model": ...}`) and `DistributedDataParallel`'s `module.` prefix are unwrapped, with a
note, since that is how most people's files come.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import torch
from torch import nn

from automtl_cli.artifacts.io import load_data
from automtl_cli.errors import BadInput, MissingInput
from automtl_cli.extras import require

__all__ = ["load_weights_into", "read_state_dict"]

StateDict = dict[str, torch.Tensor]
_WRAPPERS = ("state_dict", "model", "model_state_dict", "module", "net")


def read_state_dict(path: str, note: Callable[[str], None] = lambda s: None) -> StateDict:
    """The tensors of a state-dict file, keyed as the module it was saved from."""
    if not os.path.exists(path):
        raise MissingInput(f"{path}: no such file")
    if path.endswith(".safetensors"):
        st = require("safetensors.torch", "weights", "reading .safetensors weights")
        error = getattr(require("safetensors", "weights", "reading .safetensors weights"),
                        "SafetensorError", OSError)
        try:
            return dict(st.load_file(path))
        except (error, OSError, ValueError, RuntimeError) as e:
            raise BadInput(f"{path}: not a safetensors file: {e}") from e
    return _unwrap(path, load_data(path, "PyTorch state dicts"), note)


def _unwrap(path: str, data: object, note: Callable[[str], None]) -> StateDict:
    for _ in range(3):  # {"model": {"state_dict": ...}} and the like
        if not isinstance(data, Mapping):
            break
        if data and all(isinstance(v, torch.Tensor) for v in data.values()):
            break
        inner = next((k for k in _WRAPPERS if isinstance(data.get(k), Mapping)), None)
        if inner is None:
            break
        note(f"{path}: weights read from its {inner!r} entry")
        data = data[inner]
    if not isinstance(data, Mapping) or not data or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
        raise BadInput(f"{path}: expected a state dict (parameter name → tensor)")
    state = dict(data)
    if all(k.startswith("module.") for k in state):
        note(f"{path}: the 'module.' prefix of DistributedDataParallel removed")
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights_into(module: nn.Module, path: str,
                      note: Callable[[str], None] = lambda s: None) -> None:
    """Load FILE into `module`, every key and shape checked (one line for what does not fit)."""
    state = read_state_dict(path, note)
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {list(state[k].shape)} in the file, {list(v.shape)} in the module"
             for k, v in own.items() if k in state and state[k].shape != v.shape]
    problems = [f"missing {_few(missing)}" if missing else "",
                f"unexpected {_few(unexpected)}" if unexpected else "",
                f"wrong shape: {_few(wrong)}" if wrong else ""]
    problems = [p for p in problems if p]
    if problems:
        raise BadInput(f"{path}: does not fit the module: {'; '.join(problems)}")
    module.load_state_dict(state, strict=False)


def _few(items: list[str], k: int = 3) -> str:
    shown = ", ".join(items[:k])
    return shown + (f" and {len(items) - k} more" if len(items) > k else "")
