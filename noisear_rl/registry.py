"""`Registry`: the one name -> object registry of the toolkit (algorithms, reward models, noise
sources, diffusion backends, embedded worlds).

An entry is found, in this order, among:

- entries registered by the `register` decorator;
- lazy entries, name -> "module:attribute", imported on first `get` (and read from the module at
  every `get`);
- the modules of the registry's package: on the first lookup of a name not found above (or on
  `names()`), every module of that package is imported, so a built-in registers itself by its
  decorator and adding one is adding its file;
- the Python entry-point group named at construction (third-party packages).

Nothing is imported when a registry is created, so importing noisear_rl never imports plug-ins.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def unknown_name(kind: str, name: str, valid: Iterable[str], where: str = "") -> KeyError:
    """The error for a name nothing registers: the valid names, and how to add one's own.

    Args:
        kind: What the name names ("reward model").
        name: The unknown name.
        valid: The names that are known.
        where: Appended to the name ("in spec 'a:1,b:1'").
    """
    return KeyError(
        f"unknown {kind} {name!r}{where}; valid names: {', '.join(valid) or '(none)'}; for one of your own, "
        "import the module that registers it first (command line: --import MODULE_OR_FILE)"
    )


def import_target(target: str) -> Any:
    """The object a "module:attribute" string names (the module is imported)."""
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


class Registry(Generic[T]):
    """Maps names to registered objects (classes, functions or values).

    Args:
        kind: What the entries are, for error messages ("reward model", "algorithm").
        entry_point_group: The entry-point group third-party packages add entries through
            (None: none).
        package: The package whose modules are imported to find the entries their decorators
            register (None: none).
        lazy: Name -> "module:attribute" of entries that live elsewhere, imported on first `get`.
    """

    def __init__(
        self,
        kind: str,
        entry_point_group: str | None = None,
        package: str | None = None,
        lazy: Mapping[str, str] | None = None,
    ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.package = package
        self._lazy = dict(lazy or {})
        self._entries: dict[str, T] = {}
        self._discovered = package is None

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers its target under `name` (an error if the name is taken)."""

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def names(self) -> list[str]:
        """All known names: registered, lazy, the package's and those offered through entry points."""
        self._discover()
        return sorted(set(self._entries) | set(self._lazy) | set(self._entry_points()))

    def get(self, name: str) -> T:
        """Returns the entry for `name`, importing it on first use.

        Raises:
            KeyError: `name` is unknown; the message lists the valid names.
        """
        if name in self._entries:
            return self._entries[name]
        if name in self._lazy:  # read at every call: the module's attribute as it is now
            return import_target(self._lazy[name])
        self._discover()
        if name in self._entries:
            return self._entries[name]
        entry_point = self._entry_points().get(name)
        if entry_point is None:
            raise self._unknown(name)
        return self._entries.setdefault(name, entry_point.load())

    def check(self, name: str) -> None:
        """Raises the KeyError of `get` for an unknown name, without importing a lazy entry."""
        if name not in self:
            raise self._unknown(name)

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._lazy or name in self.names()

    def _unknown(self, name: str) -> KeyError:
        return unknown_name(self.kind, name, self.names())

    def _entry_points(self) -> dict[str, EntryPoint]:
        if self.entry_point_group is None:
            return {}
        return {ep.name: ep for ep in entry_points(group=self.entry_point_group)}

    def _discover(self) -> None:
        """Imports every module of the package once, so their decorators register the built-ins."""
        if self._discovered:
            return
        self._discovered = True  # first: a module that looks a name up while importing finds no loop
        assert self.package is not None
        try:
            package = importlib.import_module(self.package)
            for module in pkgutil.iter_modules(package.__path__):
                if not module.ispkg and not module.name.startswith("_"):
                    importlib.import_module(f"{self.package}.{module.name}")
        except BaseException:
            self._discovered = False
            raise
