"""Named registries: primitives, search spaces, data sets, guides, modes, hypergradients.

Every name a configuration can give is looked up in a :class:`Registry`, so registering, listing
and the error for an unknown name work the same way for all of them.
"""

from __future__ import annotations

import difflib
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name no registry entry has; the message lists the names there are (and the closest)."""

    def __str__(self) -> str:  # not KeyError's repr-quoted message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Entries of one kind by name, in the order they were registered.

    Args:
        kind: what an entry is, for messages (``"primitive"``, ``"mode"``, ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, *, overwrite: bool = False) -> None:
        """Add ``entry`` under ``name``; a taken name needs ``overwrite=True``."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered (pass overwrite=True)")
        self._entries[name] = entry

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its entry."""
        entry = self.get(name)
        del self._entries[name]
        return entry

    def get(self, name: str) -> T:
        """The entry of ``name``; an unknown name raises :class:`UnknownNameError`."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            pass
        close = difflib.get_close_matches(str(name), list(self._entries), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownNameError(f"unknown {self.kind} {name!r}{hint}; available: "
                               f"{', '.join(self.names())}")

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) in the order of registration."""
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


__all__ = ["Registry", "UnknownNameError"]
