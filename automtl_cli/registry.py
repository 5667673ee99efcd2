"""Strategy registries: a closed set of choices as an enum, one implementation per member.

Every axis of the method that a user can switch (the regulariser, the stepping mode, the derive
mode, the export format, …) is an `enum.Enum` whose values are the strings users type, plus a
`Registry` that maps each member to the object implementing it. Implementations register
themselves in their own module, so adding a choice is: a member in the enum, a module with the
implementation, its test (docs/adding-a-strategy.md).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry", "parse_choice"]

E = TypeVar("E", bound=enum.Enum)
T = TypeVar("T")


def parse_choice(what: str, choices: type[E], choice: E | str) -> E:
    """The member of `choices` named by `choice`, or a ValueError that lists the choices."""
    if isinstance(choice, choices):
        return choice
    try:
        return choices(choice)
    except ValueError:
        raise ValueError(f"{what}: {choice!r} is not one of "
                         f"{', '.join(m.value for m in choices)}") from None


class Registry(Generic[E, T]):
    """Members of `choices` → their implementations; looked up by member or by its value."""

    def __init__(self, what: str, choices: type[E]) -> None:
        self.what, self.choices = what, choices
        self._items: dict[E, T] = {}

    def register(self, member: E) -> Callable[[T], T]:
        def add(item: T) -> T:
            if member in self._items:
                raise ValueError(f"{self.what} {member.value!r} is registered twice")
            self._items[member] = item
            return item

        return add

    def member(self, choice: E | str) -> E:
        return parse_choice(self.what, self.choices, choice)

    def __getitem__(self, choice: E | str) -> T:
        member = self.member(choice)
        try:
            return self._items[member]
        except KeyError:  # a member without its module: a bug, not a user error
            raise LookupError(f"{self.what} {member.value!r} has no implementation") from None

    def names(self) -> list[str]:
        return [m.value for m in self.choices]

    def __iter__(self) -> Iterator[E]:
        return iter(self.choices)
