"""Strategy registries: a closed set of choices as an enum, one strategy object per choice.

Every axis of the method a user can switch (the regulariser, the stepping mode, the derive mode,
the BatchNorm sharing, the forward stage, the export format, …) is a `Choice` enum whose values
are the strings users type, plus a `Registry` that maps each member to the object implementing
it. Each implementation registers itself, in its own module, with `@REGISTRY.register(member)`;
code asks `REGISTRY.get(name)` and never compares names with strings
(docs/adding-a-strategy.md). The layout follows LibMTL, which keeps its architectures and its
loss weightings as two axes, one file per method.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Choice", "Registry", "parse_choice"]

C = TypeVar("C", bound=enum.Enum)
S = TypeVar("S")


class Choice(str, enum.Enum):
    """The names of one axis; members compare equal to the strings users type."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The plain strings, in declaration order (click choices, error messages)."""
        return tuple(m.value for m in cls)


def parse_choice(what: str, choices: type[C], choice: C | str) -> C:
    """The member of `choices` named by `choice`, or a ValueError that lists the choices."""
    if isinstance(choice, choices):
        return choice
    try:
        return choices(choice)
    except ValueError:
        raise ValueError(f"{what}: {choice!r} is not one of "
                         f"{', '.join(m.value for m in choices)}") from None


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

    def member(self, name: str | Choice) -> Choice:
        """The enum member for `name`; ValueError lists the choices (validates a config)."""
        return parse_choice(self.axis, self.choices, name)

    def get(self, name: str | Choice | S) -> S:
        """The strategy for `name` (a member or its string); ValueError lists the choices.

        A strategy of this axis passes through, so functions can take a name or a strategy.
        """
        if not isinstance(name, str) and any(name is s for s in self._entries.values()):
            return name
        return self._entries[self.member(name)]

    def check_complete(self) -> None:
        """Every member of the enum has exactly one strategy (run when the axis is imported)."""
        missing = [m.value for m in self.choices if m not in self._entries]
        if missing:
            raise RuntimeError(f"{self.axis}: no strategy registered for {', '.join(missing)}")
