"""Name → object registries: layer kinds and strategies are looked up by name, and users can add their own."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """A named collection of builders.

    ``registry.register("name")`` is a decorator; ``registry.get("name")`` returns the registered object or raises
    a ``KeyError``-derived ``ValueError`` that lists the valid names.
    """

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.what} name must be a non-empty string, got {name!r}")

        def decorator(obj: T) -> T:
            if name in self._entries and not overwrite:
                raise ValueError(f"{self.what} {name!r} is already registered; pass overwrite=True to replace it")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.what} {name!r}; valid names: {', '.join(self.names())}") from None

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return what was registered under it (``ValueError`` listing the names if absent)."""
        entry = self.get(name)
        del self._entries[name]
        return entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
