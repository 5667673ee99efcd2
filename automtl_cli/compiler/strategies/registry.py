"""One registry per strategy axis: a closed set of names (an enum) and one object per name.

The compiler's choices (`--bn`, `--skip`, the forward stage) are independent axes, as LibMTL
keeps architectures apart from weightings (`docs/adding-a-strategy.md`). Each axis has an enum,
a base class, and one module per choice that registers an instance with `@REGISTRY.register`.
Strings from flags and files are looked up with `get`; an unknown one names every choice.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Choice", "Registry"]

S = TypeVar("S")


class Choice(str, enum.Enum):
    """The names of one axis; members compare equal to the strings users type."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The plain strings, in declaration order (click.Choice lists, error messages)."""
        return tuple(m.value for m in cls)


class Registry(Generic[S]):
    """Strategy objects of one axis, keyed by the members of its `Choice` enum."""

    def __init__(self, axis: str, choices: type[Choice]) -> None:
        self.axis, self.choices = axis, choices
        self._entries: dict[Choice, S] = {}

    def register(self, choice: Choice) -> Callable[[type[S]], type[S]]:
        """Class decorator: the class is instantiated once and stands for `choice`."""

        def add(cls: type[S]) -> type[S]:
            if choice in self._entries:
                raise ValueError(f"{self.axis}: {choice.value!r} is registered twice")
            cls.name = choice  # type: ignore[attr-defined]
            self._entries[choice] = cls()
            return cls

        return add

    def get(self, name: str | S) -> S:
        """The strategy for `name` (a member or its string); ValueError lists the choices.

        A strategy of this axis passes through, so functions can take a name or a strategy.
        """
        if not isinstance(name, str) and any(name is s for s in self._entries.values()):
            return name
        try:
            return self._entries[self.choices(name)]
        except (ValueError, KeyError):
            raise ValueError(f"{self.axis}: {name!r} is not one of "
                             f"{', '.join(self.choices.values())}") from None

    def check_complete(self) -> None:
        """Every member of the enum has exactly one strategy (run when the axis is imported)."""
        missing = [m.value for m in self.choices if m not in self._entries]
        if missing:
            raise RuntimeError(f"{self.axis}: no strategy registered for {', '.join(missing)}")
