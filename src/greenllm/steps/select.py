"""Module selection shared by every step: ``targets`` / ``ignore`` on module names.

One meaning everywhere (quantize, prune, lora, distill):

- A pattern is an ``fnmatch`` glob (``*``, ``?``, ``[0-9]``), matched case-sensitively against a
  module's full dotted name (``model.layers.0.mlp.down_proj``) or any dotted suffix of it, so
  ``down_proj``, ``mlp.*``, ``*.self_attn.*`` and ``model.layers.1[0-9].*`` all work.
- A module is selected when it is a candidate of the step (e.g. an ``nn.Linear``), matches at
  least one ``targets`` pattern (an empty ``targets`` selects every candidate) and matches no
  ``ignore`` pattern.

Stdlib only; the caller passes the model and says which modules are candidates.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ConfigError


def matches(name: str, pattern: str) -> bool:
    """fnmatch ``pattern`` against the full dotted ``name`` or any dotted suffix of it."""
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[i:]), pattern) for i in range(len(parts)))


def is_selected(name: str, targets: Iterable[str] | None, ignore: Iterable[str] | None) -> bool:
    targets, ignore = list(targets or []), list(ignore or [])
    if targets and not any(matches(name, p) for p in targets):
        return False
    return not any(matches(name, p) for p in ignore)


def select_modules(
    model: Any,
    targets: Iterable[str] | None,
    ignore: Iterable[str] | None,
    *,
    candidate: Callable[[str, Any], bool] | None = None,
    required: str | None = None,
) -> list[tuple[str, Any]]:
    """``[(full_name, module)]`` in ``named_modules()`` order, chosen by targets/ignore.

    ``candidate(name, module)`` says which modules the step can handle (default: all). With
    ``required`` (the field path for the message, e.g. ``"quantize.targets"``), selecting
    nothing raises ``ConfigError`` that shows what the candidates are named like.
    """
    chosen, first = [], None
    for name, mod in model.named_modules():
        if not name or (candidate is not None and not candidate(name, mod)):
            continue
        first = first or name
        if is_selected(name, targets, ignore):
            chosen.append((name, mod))
    if not chosen and required:
        hint = (
            f"; candidate modules are named like {first!r}"
            if first
            else "; the model has no candidate modules"
        )
        raise ConfigError(
            f"{required}: no module matched targets={list(targets or []) or ['*']} "
            f"minus ignore={list(ignore or [])}{hint}"
        )
    return chosen


def check_patterns(cfg: Any, names: tuple[str, ...] = ("targets", "ignore")) -> None:
    """``ConfigError`` for a blank pattern in a config's targets/ignore lists."""
    for name in names:
        for i, pat in enumerate(getattr(cfg, name) or []):
            if not isinstance(pat, str) or not pat.strip():
                raise ConfigError(f"{name}[{i}]: empty pattern; give a glob such as 'q_proj'")


__all__ = ["check_patterns", "is_selected", "matches", "select_modules"]
