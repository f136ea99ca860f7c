"""The output directory of a run: one writer at a time, and honest errors about the disk.

``OutputLock(out)`` is an exclusive, non-blocking OS lock (``fcntl.flock``) on
``OUT/.greenllm.lock`` that holds the holder's pid; ``greenllm run`` keeps it for the whole
run, so a second run into the same directory fails at once with "OUT is in use by pid N".
The kernel drops the lock when the holder dies (kill -9 included), so a stale lock file never
blocks anyone. ``report_lock(out)`` is a short, blocking lock that serialises report writers
(a run's final report and a `greenllm report` typed meanwhile).

``storage_error(exc, path, action)`` turns an OSError or a sqlite3 error into one
``StoreError`` line that names the real cause (permission denied, read-only file system, disk
full), the path and the fix. No torch.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from .errors import StoreError

LOCK_FILENAME = ".greenllm.lock"
REPORT_LOCK_FILENAME = ".greenllm-report.lock"


def _open_lock_file(path: Path, action: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise storage_error(exc, path, action) from None


class OutputLock:
    """Exclusive lock on an output directory (see the module docstring)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.path = self.out / LOCK_FILENAME
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        fd = _open_lock_file(self.path, "lock the output directory")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder_pid(fd)
            os.close(fd)
            raise StoreError(
                f"{self.out} is in use by pid {pid} (another 'greenllm run' writes "
                "there); wait for it to finish, or choose another --out "
                "directory"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            os.close(fd)
            raise storage_error(exc, self.path, "lock the output directory") from None
        self._fd = fd
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder_pid(fd: int) -> str:
    """The pid the holder wrote (it writes just after locking, so retry a moment)."""
    import time

    for _ in range(50):
        try:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        except OSError:
            text = ""
        if text.isdigit():
            return text
        time.sleep(0.01)
    return "unknown"


@contextlib.contextmanager
def report_lock(out: str | Path) -> Iterator[None]:
    """Blocking exclusive lock serialising report writers in ``out``."""
    path = Path(out) / REPORT_LOCK_FILENAME
    fd = _open_lock_file(path, "write the report")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- disk errors

_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _cause_of_path(path: Path) -> str | None:
    """Look at the path itself: read-only mount, no write permission, no free space."""
    probe = path if path.exists() else next((p for p in path.parents if p.exists()), None)
    if probe is None:
        return None
    try:
        st = os.statvfs(probe)
    except OSError:
        st = None
    if st is not None and st.f_flag & os.ST_RDONLY:
        return "read-only"
    if not os.access(probe, os.W_OK) or (probe.is_file() and not os.access(probe.parent, os.W_OK)):
        return "permission"
    if st is not None and st.f_bavail == 0:
        return "full"
    return None


def _cause(exc: BaseException, path: Path) -> str | None:
    if isinstance(exc, OSError):
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "permission"
        if exc.errno == errno.EROFS:
            return "read-only"
        if exc.errno in _FULL:
            return "full"
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        text = str(exc).lower()
        if code == 13 or "disk is full" in text:  # SQLITE_FULL
            return "full"
        if code in (8, 1032) or "readonly" in text or "read-only" in text:  # SQLITE_READONLY
            return _cause_of_path(path) or "read-only"
        if code in (14, 3) or "unable to open" in text or "access permission" in text:
            return _cause_of_path(path) or "permission"  # SQLITE_CANTOPEN / SQLITE_PERM
        if code == 10 or "disk i/o" in text:  # SQLITE_IOERR
            return _cause_of_path(path)
    return _cause_of_path(path) if isinstance(exc, OSError) else None


def storage_error(exc: BaseException, path: str | Path, action: str) -> StoreError:
    """One StoreError naming why ``action`` on ``path`` failed and what to do about it."""
    path = Path(path)
    cause = _cause(exc, path)
    where = str(path)
    if cause == "permission":
        msg = (
            f"cannot {action}: permission denied on {where}; make it writable by this user "
            "(e.g. chmod u+w, or fix its owner) or choose another --out directory"
        )
    elif cause == "read-only":
        msg = (
            f"cannot {action}: {where} is on a read-only file system; choose an --out "
            "directory on a writable disk (the results there are intact)"
        )
    elif cause == "full":
        msg = (
            f"cannot {action}: the disk holding {where} is full; free some space and run "
            "the same command again (finished results are kept), or choose another --out "
            "directory"
        )
    else:
        detail = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        msg = f"cannot {action}: {where}: {detail}"
    return StoreError(msg)


__all__ = ["OutputLock", "report_lock", "storage_error", "LOCK_FILENAME"]
