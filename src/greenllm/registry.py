"""Registry[T]: named handlers, lazily imported, with did-you-mean on unknown names.

The same key is used in YAML, the CLI, Python and the docs. A target may be the object itself
or a ``"package.module:attr"`` string imported on first use, so registering a torch-backed
handler costs nothing for a process that never uses it.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


def did_you_mean(name: str, known: list[str]) -> str | None:
    hits = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    if hits:
        return hits[0]
    low = name.lower()
    for k in known:
        if k.lower() == low or k.lower().startswith(low) or low.startswith(k.lower()):
            return k
    return None


def _resolve(target: str):
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """A name -> handler map. ``kind`` is used in messages ("unknown meter 'nvm'...")."""

    def __init__(self, kind: str, entries: dict[str, T | str] | None = None):
        self.kind = kind
        self._entries: dict[str, T | str] = dict(entries or {})

    def register(self, name: str, target: T | str | None = None, *, replace: bool = False):
        """Register ``target`` under ``name``; without a target, returns a decorator."""
        if target is None:

            def deco(obj):
                self.register(name, obj, replace=replace)
                return obj

            return deco
        if name in self._entries and not replace:
            existing = self._entries[name]
            if existing is not target and not (
                isinstance(existing, str) and not isinstance(target, str)
            ):
                raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = target
        return target

    def get(self, name: str) -> T:
        try:
            target = self._entries[name]
        except KeyError:
            known = self.names()
            raise UnknownNameError(self.kind, name, known, did_you_mean(name, known)) from None
        if isinstance(target, str):
            target = _resolve(target)
            self._entries[name] = target
        return target  # type: ignore[return-value]

    def check(self, name: str) -> str:
        """Raise the did-you-mean error for an unknown name without importing anything."""
        if name not in self._entries:
            known = self.names()
            raise UnknownNameError(self.kind, name, known, did_you_mean(name, known))
        return name

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, Callable]]:
        return [(n, self.get(n)) for n in self.names()]
