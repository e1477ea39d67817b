"""One registry type for every extension point (model families, samplers, evaluation methods):
entries by name in registration order, a taken name refused, an unknown one answered with the
choices. A read-only mapping, so ``FAMILIES["lightgbm"]`` and ``list(FAMILIES)`` read as a
dict does."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from sllmbo.core.errors import SllmboError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Entries of one kind (``kind`` names it in messages, e.g. "sampler")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise SllmboError(f"a {self.kind} named '{name}' is already registered",
                              hint=f"give the new {self.kind} a name of its own")
        self._entries[name] = entry
        return entry

    def get_or_fail(self, name: str) -> T:
        """The entry of ``name``; an unknown name is one message listing the choices."""
        if name not in self._entries:
            raise SllmboError(f"unknown {self.kind} '{name}'",
                              hint=f"choose one of: {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
