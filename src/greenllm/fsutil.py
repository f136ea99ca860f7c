"""Files greenllm writes: atomically, and with the permissions the user's umask asks for.

``atomic_open`` / ``atomic_write`` write to a new hidden file next to the target and rename it
over the target, so a reader never sees half a file. The temporary file is created with mode
0o666 and the kernel applies the umask (0644 under umask 022), as for any tool's output;
``tempfile.mkstemp`` would make it 0600. ``honour_umask(tree)`` fixes the modes of a tree that
other code wrote (``save_pretrained`` writes weights through mkstemp). Stdlib only: a leaf
module every layer may use.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    with contextlib.suppress(OSError):
        m = re.search(r"^Umask:\s*([0-7]+)", Path("/proc/self/status").read_text(), re.MULTILINE)
        if m:
            return int(m.group(1), 8)
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def _create_temp(path: Path) -> tuple[int, Path]:
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, _FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file next to {path}")


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike,
    mode: str = "wb",
    *,
    encoding: str | None = None,
    newline: str | None = None,
    fsync: bool = False,
) -> Iterator[IO[Any]]:
    """Open a new file that replaces ``path`` when the block ends without an exception (and
    is removed when it raises). ``mode`` is "wb" or "w"; text defaults to UTF-8."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', not {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(target)
    try:
        text = {"encoding": encoding or "utf-8", "newline": newline} if mode == "w" else {}
        with os.fdopen(fd, mode, **text) as fh:
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb", fsync=fsync) as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def honour_umask(root: str | os.PathLike) -> None:
    """Give ``root`` and everything under it the modes a fresh file / folder gets under the
    current umask (files 0o666 & ~umask, executables and folders 0o777 & ~umask)."""
    mask = current_umask()
    root = Path(root)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        executable = path.is_dir() or bool(path.stat().st_mode & 0o111)
        path.chmod((0o777 if executable else 0o666) & ~mask)


__all__ = ["atomic_open", "atomic_write", "current_umask", "honour_umask"]
