"""A name -> factory registry shared by reward models and algorithms.

Entries come from decorators in this package and, lazily, from the Python entry-point group
named at construction (third-party packages), so importing noisear_rl never imports plug-ins.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to registered objects (classes or functions).

    Args:
        kind: What the entries are, for error messages ("reward model", "algorithm").
        entry_point_group: The entry-point group third-party packages add entries through.
    """

    def __init__(self, kind: str, entry_point_group: str) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under `name` (an error if the name is taken)."""

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def _entry_points(self) -> dict[str, object]:
        return {ep.name: ep for ep in entry_points(group=self.entry_point_group)}

    def names(self) -> list[str]:
        """All known names: registered ones and those offered through entry points."""
        return sorted(set(self._entries) | set(self._entry_points()))

    def get(self, name: str) -> T:
        """Returns the entry for `name`, loading a third-party entry point on first use.

        Raises:
            KeyError: `name` is unknown; the message lists the valid names.
        """
        if name not in self._entries:
            entry_point = self._entry_points().get(name)
            if entry_point is None:
                raise KeyError(
                    f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names()) or '(none)'}"
                )
            loaded = entry_point.load()  # type: ignore[attr-defined]
            # Loading a module may register the name itself through the decorator.
            self._entries.setdefault(name, loaded)
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        return name in self.names()
