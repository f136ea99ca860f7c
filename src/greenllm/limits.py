"""Bounds on everything a user feeds in. Stdlib + yaml only (no torch).

- ``excerpt(value)``: a short ``repr`` of any value for an error message (never the whole of a
  10 MB string or an alias-expanded YAML tree).
- ``check_number(value, field, lo, hi)``: the one numeric check behind recipe fields and CLI
  options: finite (no nan/inf), inside sane bounds, the field named in the error.
- ``load_yaml(path)``: ``yaml.safe_load`` with limits on file size, nesting depth and the
  expanded node count (aliases counted as many times as they are used), so a YAML alias bomb
  fails at once in bounded memory.
- ``check_safe_name(name, field)``: a name that becomes a directory or file name (variants,
  recipes) is a plain component: not empty, not ``.``/``..``, no ``/``, ``\\``, control
  characters or NUL.
- ``read_text(path, what)``: a text file decoded as UTF-8, or a DataError naming the file and
  the line of the first invalid byte.
"""

from __future__ import annotations

import math
import os
import reprlib
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError

EXCERPT_CHARS = 80
MAX_YAML_BYTES = 1 << 20  # 1 MiB: recipes are a few kB
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 100_000  # after alias expansion
MAX_NAME_CHARS = 128
MAX_CONFIG_INT = 2**53  # any integer setting: past this it is a typo or an attack
MAX_CONFIG_FLOAT = 1e15  # any real-valued setting (field checks are tighter)

_repr = reprlib.Repr()
_repr.maxstring = EXCERPT_CHARS
_repr.maxother = EXCERPT_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxlevel = 3


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (with ``...``), computed without ever
    building the full repr of a large or deeply shared structure."""
    try:
        text = _repr.repr(value)
    except Exception:  # a hostile __repr__: name the type only
        text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[: max(limit - 3, 1)] + "..."
    return text


def short(text: Any, limit: int = EXCERPT_CHARS) -> str:
    """``str(text)`` cut to ``limit`` characters (for keys and paths echoed in errors)."""
    t = str(text)
    return t if len(t) <= limit else t[: limit - 3] + "..."


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def check_number(
    value: Any,
    field: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    integer: bool = False,
    unit: str = "",
) -> Any:
    """``value`` if it is a finite number within ``lo..hi`` (inclusive), else a ConfigError
    naming ``field``. ``integer=True`` also requires an int (bool is never a number)."""
    what = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{field}: expected {what}, got {excerpt(value)}")
    if integer and not isinstance(value, int):
        raise ConfigError(f"{field}: expected {what}, got {excerpt(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{field}: {value} is not a finite number")
    suffix = f" {unit}" if unit else ""
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = (
            f"{_num(lo)}..{_num(hi)}"
            if lo is not None and hi is not None
            else f">= {_num(lo)}"
            if lo is not None
            else f"<= {_num(hi)}"
        )
        raise ConfigError(f"{field}: {excerpt(value)} is outside {rng}{suffix}")
    return value


def check_safe_name(name: Any, field: str) -> str:
    """``name`` if it can be used as one directory/file name component, else a ConfigError
    naming ``field``."""
    if not isinstance(name, str):
        raise ConfigError(f"{field}: expected a name, got {excerpt(name)}")
    if not name.strip():
        raise ConfigError(f"{field}: empty name")
    if name in (".", ".."):
        raise ConfigError(f"{field}: {name!r} is not a usable name (it is a directory reference)")
    bad = [c for c in name if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    if bad:
        raise ConfigError(
            f"{field}: {excerpt(name)} contains {bad[0]!r}; a name may not "
            "contain '/', '\\' or control characters"
        )
    if len(name) > MAX_NAME_CHARS:
        raise ConfigError(f"{field}: {excerpt(name)} is longer than {MAX_NAME_CHARS} characters")
    return name


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; invalid UTF-8 or an unreadable file -> one DataError."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise DataError(f"{what} {str(p)!r} is a directory, not a file") from None
    except OSError as exc:
        raise DataError(f"{what} {str(p)!r} cannot be read: {exc.strerror or exc}") from None
    return decode_utf8(data, p, what)


def decode_utf8(data: bytes, path: str | Path, what: str = "file") -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{what} {str(path)!r} line {line}: not UTF-8 text (invalid byte "
            f"0x{data[exc.start]:02x}); save it as UTF-8"
        ) from None


# ---------------------------------------------------------------------------- YAML


def _yaml_loader(max_depth: int, where: str):
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """SafeLoader whose composer refuses nesting deeper than ``max_depth``."""

        _depth = 0

        def compose_node(self, parent, index):
            self._depth += 1
            try:
                if self._depth > max_depth:
                    mark = self.peek_event().start_mark
                    raise ConfigError(
                        f"{where}: line {mark.line + 1}: YAML nested deeper than {max_depth} levels"
                    )
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    return BoundedLoader


def _expanded_size(root, max_nodes: int, max_depth: int, where: str) -> None:
    """Count nodes as construction would build them (an alias counts its whole subtree each
    time it is used); refuse recursive aliases, more than ``max_nodes`` or a depth past
    ``max_depth`` (aliases can stack depth). Iterative, memoised: O(distinct nodes)."""
    import yaml

    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if isinstance(node, yaml.ScalarNode):
            size[key], depth[key] = 1, 1
            continue
        children = (
            [c for pair in node.value for c in pair]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > max_nodes:
                raise ConfigError(
                    f"{where}: the YAML expands to more than {max_nodes} nodes "
                    "(aliases used many times?); a recipe is far smaller"
                )
            if depth[key] > max_depth:
                raise ConfigError(
                    f"{where}: YAML nested deeper than {max_depth} levels (through aliases)"
                )
            continue
        if key in size:
            continue
        if key in on_path:
            raise ConfigError(f"{where}: a YAML alias refers to itself (recursive structure)")
        on_path.add(key)
        stack.append((node, True))
        for c in children:
            if id(c) in on_path:
                raise ConfigError(f"{where}: a YAML alias refers to itself (recursive structure)")
            if id(c) not in size:
                stack.append((c, False))


def load_yaml_text(
    text: str,
    where: str = "<yaml>",
    *,
    max_depth: int = MAX_YAML_DEPTH,
    max_nodes: int = MAX_YAML_NODES,
) -> Any:
    """``yaml.safe_load(text)`` within the depth and expanded-size bounds."""
    import yaml

    loader = _yaml_loader(max_depth, where)(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
            raise ConfigError(f"{where}:{at} invalid YAML: {problem}") from None
        if node is None:
            return None
        _expanded_size(node, max_nodes, max_depth, where)
        try:
            return loader.construct_document(node)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
            raise ConfigError(f"{where}:{at} invalid YAML: {problem}") from None
    finally:
        loader.dispose()


def load_yaml(path: str | Path, *, max_bytes: int = MAX_YAML_BYTES, **limits: int) -> Any:
    """Load one YAML file within ``max_bytes`` (checked before reading), UTF-8 only, and the
    bounds of ``load_yaml_text``."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise DataError(f"file {str(p)!r} does not exist") from None
    if st.st_size > max_bytes:
        raise ConfigError(
            f"{p}: {st.st_size} bytes is larger than the {max_bytes}-byte limit for a YAML file"
        )
    try:
        with open(p, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise DataError(f"{p}: cannot be read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:  # grew, or a special file
        raise ConfigError(f"{p}: larger than the {max_bytes}-byte limit for a YAML file")
    text = decode_utf8(data, p, "YAML file")
    return load_yaml_text(text, str(p), **limits)


# ---------------------------------------------------------------------------- output paths


def check_writable_dir(directory: str | Path, what: str = "output directory") -> Path:
    """Create ``directory`` (and parents) if needed and prove a file can be written there
    (a probe file of a few bytes, removed again), before any long work. Not creatable,
    read-only, not a directory or a full disk -> one DataError naming ``what``."""
    import os
    import tempfile

    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DataError(f"{what} {str(d)!r} exists and is not a directory") from None
    except OSError as exc:
        raise DataError(f"{what} {str(d)!r} cannot be created: {exc.strerror or exc}") from None
    if not d.is_dir():
        raise DataError(f"{what} {str(d)!r} exists and is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".greenllm-probe-", dir=d)
    except OSError as exc:
        raise DataError(f"{what} {str(d)!r} is not writable: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"\0" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise DataError(f"{what} {str(d)!r} is not writable: {exc.strerror or exc}") from None
    finally:
        try:
            os.unlink(probe)
        except OSError:
            pass
    return d


def check_writable_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """``path`` can be written later: its folder is writable and it is not a directory."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{what} {str(p)!r} is a directory; give a file path")
    check_writable_dir(p.parent if str(p.parent) else Path("."), f"folder of {what}")
    return p
