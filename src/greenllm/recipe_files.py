"""The recipes shipped with greenllm: where they are, what they are, copying one out.

In a source checkout they live in ``<repo>/recipes/`` (next to ``src/``); in an installed
wheel pyproject.toml maps that folder to the package data ``greenllm/recipes/``.
``recipes_dir()`` finds whichever applies. A recipe's NAME is its path under that folder
without ``.yaml``: ``quickstart``, ``seeds/slm-energy-edge``. Stdlib + yaml only.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, DataError, GreenLLMError
from .registry import did_you_mean

_PKG = Path(__file__).resolve().parent


def recipes_dir() -> Path:
    """The folder of shipped recipes: ``<repo>/recipes`` in a source checkout (editable
    installs included), else the copy inside the installed package."""
    root = _PKG.parent.parent
    if (
        _PKG.parent.name == "src"
        and (root / "pyproject.toml").is_file()
        and (root / "recipes").is_dir()
    ):
        return root / "recipes"
    packaged = _PKG / "recipes"
    if packaged.is_dir():
        return packaged
    raise GreenLLMError(
        f"the shipped recipes are missing: neither {root / 'recipes'} nor "
        f"{packaged} exists; reinstall greenllm"
    )


@dataclass(frozen=True)
class ShippedRecipe:
    name: str  # quickstart, seeds/slm-energy-edge
    path: Path
    description: str  # the leading comment's first sentence, shortened; else its name


def _shorten(text: str, width: int = 90) -> str:
    """One line: parenthetical asides (paper titles, sizes) dropped, cut at ``width``."""
    while True:
        inner = re.sub(r"\s*\([^()]*\)", "", text)
        if inner == text:
            break
        text = inner
    if len(text) <= width:
        return text
    return text[: width - 1].rsplit(" ", 1)[0].rstrip(" ,;:(") + "\u2026"


def _description(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    para = " ".join(x for x in lines if x)
    if para:
        m = re.search(r"[.!?](\s|$)", para)
        return _shorten(para[: m.start() + 1] if m else para)
    m = re.search(r"^name:\s*(.+?)\s*$", text, re.MULTILINE)
    return m.group(1).strip("'\"") if m else ""


def list_recipes() -> list[ShippedRecipe]:
    """Every shipped recipe, top-level ones first, then by name."""
    base = recipes_dir()
    out = [
        ShippedRecipe(p.relative_to(base).with_suffix("").as_posix(), p, _description(p))
        for p in base.rglob("*.yaml")
    ]
    return sorted(out, key=lambda r: (r.name.count("/"), r.name))


def find_recipe(name: str) -> ShippedRecipe:
    """The shipped recipe NAME (``.yaml`` optional); unknown -> did-you-mean ConfigError."""
    key = name.strip().strip("/").removesuffix(".yaml")
    recipes = list_recipes()
    by_name = {r.name: r for r in recipes}
    if key in by_name:
        return by_name[key]
    # a bare file name of a recipe under a folder: slm-energy-edge -> seeds/slm-energy-edge
    tails = [r for r in recipes if r.name.rsplit("/", 1)[-1] == key]
    if len(tails) == 1:
        return tails[0]
    known = list(by_name)
    suggestion = did_you_mean(key, known) or did_you_mean(
        key, [r.name.rsplit("/", 1)[-1] for r in recipes]
    )
    if suggestion and suggestion not in by_name:
        suggestion = next(r.name for r in recipes if r.name.endswith("/" + suggestion))
    msg = f"unknown recipe {name!r}"
    if suggestion:
        msg += f"; did you mean {suggestion!r}?"
    raise ConfigError(msg + " (list them with: greenllm recipes list)")


def copy_recipe(name: str, directory: str | Path, force: bool = False) -> Path:
    """Copy the shipped recipe NAME into ``directory`` (created if missing) as its file name;
    an existing file is kept unless ``force``. Returns the written path."""
    recipe = find_recipe(name)
    dest_dir = Path(directory).expanduser()
    if dest_dir.exists() and not dest_dir.is_dir():
        raise DataError(f"{dest_dir} is a file; give a directory to copy the recipe into")
    dest = dest_dir / recipe.path.name
    if dest.exists() and not force:
        raise GreenLLMError(f"{dest} already exists; pass --force to overwrite it")
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(recipe.path, dest)
    except OSError as exc:
        raise DataError(f"cannot copy recipe {recipe.name!r} to {dest}: {exc}") from None
    return dest


__all__ = ["ShippedRecipe", "copy_recipe", "find_recipe", "list_recipes", "recipes_dir"]
