"""`FILE.py:NAME` and `package.module:NAME` → the `nn.Module` a user names, and the source text
the run keeps.

NAME is an `nn.Module` subclass built with no arguments, a function returning a module, or a
module object. A file is executed from its text, so a later stage that re-traces a run's stored
text builds the network that was compiled, whatever happened to the file since; an importable
module is imported by name (its text is kept for the run's hash).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import types
from dataclasses import dataclass

from torch import nn

from automtl_cli.errors import BadInput, MissingInput
from automtl_cli.frontend.build import read_source

__all__ = ["TorchSpec", "is_torch_spec", "load_module", "parse_spec", "source_text"]

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class TorchSpec:
    """Where a module comes from: a `.py` file's path or an importable module's name, and NAME."""

    where: str  # the file path (`FILE.py`) or the dotted module name
    name: str
    is_file: bool

    def __str__(self) -> str:
        return f"{self.where}:{self.name}"


def is_torch_spec(spec: str) -> bool:
    """`FILE.py:NAME` or `package.module:NAME` (and not an existing file of that name)."""
    where, sep, name = spec.rpartition(":")
    if not sep or not name.isidentifier() or os.path.exists(spec):
        return False
    return where.endswith(".py") or _DOTTED.fullmatch(where) is not None


def parse_spec(spec: str) -> TorchSpec:
    where, sep, name = spec.rpartition(":")
    if not sep or not name.isidentifier():
        raise BadInput(f"{spec}: expected FILE.py:NAME or package.module:NAME")
    return TorchSpec(where, name, where.endswith(".py"))


def source_text(spec: TorchSpec) -> tuple[str, str]:
    """(absolute path, text) of the Python file that defines the module."""
    if spec.is_file:
        return os.path.abspath(spec.where), read_source(spec.where)
    module = _import(spec.where)
    path = inspect.getsourcefile(module)
    if path is None:
        raise BadInput(f"{spec}: module {spec.where} has no Python source file")
    return os.path.abspath(path), read_source(path)


def _import(name: str) -> types.ModuleType:
    """Import `name` with the working directory on `sys.path`, as `python -m` would have it."""
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise MissingInput(f"{name}: cannot import: {e}") from e
    finally:
        if added:
            sys.path.remove(os.getcwd())


def _exec_file(path: str, text: str) -> types.ModuleType:
    """Run a file's text as a fresh module named after the file, its folder on `sys.path` (for
    its sibling imports) and the module in `sys.modules` (where `@dataclass` and `typing` look a
    class's module up) while it runs."""
    name = os.path.splitext(os.path.basename(path))[0]
    module = types.ModuleType(name)
    module.__file__ = path
    folder = os.path.dirname(path)
    sys.path.insert(0, folder)
    before = sys.modules.get(name)
    sys.modules[name] = module
    try:
        # the user's own model file, run as `python FILE` would run it
        exec(compile(text, path, "exec"), module.__dict__)
    finally:
        sys.path.remove(folder)
        if before is None:
            del sys.modules[name]
        else:
            sys.modules[name] = before
    return module


def load_module(spec: TorchSpec, path: str, text: str) -> nn.Module:
    """The module NAME stands for, built; `text` is the file's (stored) source."""
    if spec.is_file:
        module = _exec_file(path, text)
    else:
        module = _import(spec.where)
        if read_source(path) != text:  # the file it was compiled from, read again
            raise BadInput(f"{spec}: {path} changed since the run was compiled; compile again")
    obj = getattr(module, spec.name, None)
    if obj is None:
        found = sorted(k for k, v in vars(module).items()
                       if isinstance(v, nn.Module) or (isinstance(v, type)
                                                       and issubclass(v, nn.Module)))
        hint = f" (modules there: {', '.join(found)})" if found else ""
        raise BadInput(f"{spec}: {spec.where} defines no {spec.name!r}{hint}")
    return _instantiate(spec, obj)


def _instantiate(spec: TorchSpec, obj: object) -> nn.Module:
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise BadInput(f"{spec}: {spec.name} is a {type(obj).__name__}, not an nn.Module, a "
                       "Module subclass or a function returning one")
    try:
        built = obj()
    except TypeError as e:
        raise BadInput(f"{spec}: {spec.name}() must take no arguments: {e}") from e
    if not isinstance(built, nn.Module):
        raise BadInput(f"{spec}: {spec.name}() returned a {type(built).__name__}, not an "
                       "nn.Module")
    return built
