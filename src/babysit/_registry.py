"""Registries by name: the one mechanism behind models, tasks, rules, schedules, probes, ...

A :class:`Registry` is a read-only mapping ``name -> entry`` that fills itself through a
decorator, in definition order (the order tests iterate and pages render). Looking up a
name that is not there raises the registry's error class with one line:
``unknown <kind> 'x'; did you mean 'y'? use one of a, b, c``.

    MODELS: Registry[ModelBuilder] = Registry("model", error=ConfigError)

    @MODELS.register("mlp")
    def mlp(*, hidden=(100,)) -> nn.Module: ...

    MODELS["mlp"]            # the builder
    MODELS["mpl"]            # ConfigError: unknown model 'mpl'; did you mean 'mlp'? ...

``register(name, wrap)`` stores ``wrap(fn)`` (e.g. a frozen spec dataclass around the
function) and gives back ``fn`` itself, so decorated functions stay plain functions.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

__all__ = ["Registry", "unknown_name"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def unknown_name(kind: str, name: object, known: list[str], *, where: str = "") -> str:
    """The one message for a name not in a list: what, a close match, and the choices."""
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    prefix = f"{where}: " if where else ""
    return f"{prefix}unknown {kind} {name!r}{hint} use one of {', '.join(known)}"


class Registry(Mapping[str, T], Generic[T]):
    """Entries by name, in registration order; a lookup miss raises ``error`` in one line."""

    def __init__(self, kind: str, *, error: type[Exception] = KeyError) -> None:
        self.kind = kind  # "model", "update rule", ... (used in the error message)
        self.error = error
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; registering a name twice is a programming error."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    @overload
    def register(self, name: str, wrap: None = None) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, wrap: Callable[[F], T]) -> Callable[[F], F]: ...

    def register(self, name: str, wrap: Callable[[Any], T] | None = None) -> Callable[[Any], Any]:
        """Decorator: store ``wrap(fn)`` (default: ``fn``) under ``name``; return ``fn``."""

        def decorate(fn: Any) -> Any:
            self.add(name, wrap(fn) if wrap is not None else fn)
            return fn

        return decorate

    def remove(self, name: str) -> T:
        """Take ``name`` out and return its entry (a test cleaning up a throwaway entry)."""
        entry = self.get_or_raise(name)
        del self._entries[name]
        return entry

    def get_or_raise(self, name: str, *, where: str = "") -> T:
        """The entry for ``name``, else ``error("[where: ]unknown <kind> ...")``."""
        if name in self._entries:
            return self._entries[name]
        raise self.error(unknown_name(self.kind, name, self.names(), where=where))

    def get(self, name: str, default: Any = None) -> Any:  # Mapping.get expects KeyError
        return self._entries.get(name, default)

    def names(self) -> list[str]:
        return list(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get_or_raise(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
