"""Name-to-factory registries for models, backbones, attacks and defenses."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from models.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a lower-case name to a class or factory.

    ``register`` is a decorator used next to each definition. Registering a
    name twice raises, and looking up an unknown name raises ``ConfigError``
    with the valid names and the closest match.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._defaults: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **defaults: Any) -> Callable[[T], T]:
        """Register the decorated object under ``name``.

        ``defaults`` are keyword arguments that ``create`` passes first, so one
        class can be registered under several names (a targeted and a
        non-targeted variant, say).
        """
        key = name.lower()

        def decorator(obj: T) -> T:
            if key in self._entries:
                raise ConfigError(
                    f"{self.kind} {key!r} is already registered by "
                    f"{_qualified_name(self._entries[key])}; choose another name"
                )
            self._entries[key] = obj
            self._defaults[key] = dict(defaults)
            return obj

        return decorator

    def get(self, name: str) -> T:
        return self._entries[self.check(name)]

    def defaults(self, name: str) -> dict[str, Any]:
        return dict(self._defaults[self.check(name)])

    def create(self, name: str, **kwargs: Any) -> Any:
        """Instantiate the entry with its registered defaults, then ``kwargs``."""
        key = self.check(name)
        factory: Any = self._entries[key]
        return factory(**{**self._defaults[key], **kwargs})

    def check(self, name: str) -> str:
        """Return the normalised name, or raise with the valid choices."""
        key = str(name).lower()
        if key in self._entries:
            return key
        valid = ", ".join(sorted(self._entries)) or "(none registered)"
        close = difflib.get_close_matches(key, list(self._entries), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown {self.kind} {name!r}; valid names: {valid}.{hint}")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def _qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
