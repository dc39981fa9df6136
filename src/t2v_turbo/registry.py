"""Named registries: the one mechanism by which backbone families, named models, data sources,
rewards, prompt sets, judges and commands are found by name.

A registry maps a name to a Python object (a class or a factory function; never an import string).
Built-ins register themselves when their package is imported; plugins (for example the MovingDigits
world, `t2v_turbo.worlds.moving_digits`) register through the same `register` calls when
`plugins.load_plugins()` runs, which a lookup of an unknown name triggers once. So the core never
names a plugin, and a third-party package adds a model family by declaring an entry point in the
`t2v_turbo.plugins` group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """name -> object, with a one-line `ConfigError` listing the valid names on a miss.

    Args:
        kind: what the names denote, used in messages ("backbone family", "reward", ...).
    """

    def __init__(self, kind: str, builtins: Callable[[], None] | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}
        self._builtins = builtins  # called once before the first lookup (lazy built-in registration)

    def register(self, name: str, obj: T | None = None, *, help: str = "", replace: bool = False):
        """Register `obj` under `name`; without `obj`, returns a decorator."""

        def add(o: T) -> T:
            if name in self._items and not replace and self._items[name] is not o:
                raise ConfigError(f"{self.kind} {name!r} is already registered")
            self._items[name] = o
            self._help[name] = help or (getattr(o, "__doc__", None) or "").strip().split("\n")[0]
            return o

        return add if obj is None else add(obj)

    def _load_builtins(self) -> None:
        if self._builtins is not None:
            fn, self._builtins = self._builtins, None
            fn()

    def _ensure(self, name: str) -> None:
        self._load_builtins()
        if name not in self._items:
            from .plugins import load_plugins

            load_plugins()

    def get(self, name: str) -> T:
        self._ensure(name)
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names()) or '(none)'}")
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self._ensure(name)
        return name in self._items

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def names(self) -> list[str]:
        from .plugins import load_plugins

        self._load_builtins()
        load_plugins()
        return sorted(self._items)

    def help(self, name: str) -> str:
        return self._help.get(name, "")

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._items)})"


Factory = Callable[..., Any]
