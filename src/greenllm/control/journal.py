"""Where power-control journals live, the per-device lock, and reading a journal safely.

One journal and one lock file per device, in one directory (``control_dir()``):

- ``$GREENLLM_CONTROL_DIR`` when set (tests inject it this way or with ``control_dir=``);
- else ``/var/lib/greenllm/control`` when this process can write there (root, or a directory
  prepared for the user);
- else the user's cache, ``~/.cache/greenllm/control`` (``$GREENLLM_CACHE/control``).

``greenllm control show`` / ``control restore`` look in all of these (``search_dirs()``), so a
journal is found whichever command wrote it. Files are named by the device's identity (GPU
UUID for NVML, the board's serial number for a Jetson): ``nvml-GPU-....json`` and
``nvml-GPU-....lock``.

The lock (``fcntl.flock`` on the ``.lock`` file) is held for the whole time a cap is held; the
kernel drops it when the holder dies, however it dies. The holder writes its pid into the lock
file so a second holder can name it. A journal found while the lock is free is stale by
construction: its writer is gone.

A journal is data, never code: it is read with ``O_NOFOLLOW``, must be owned by this user or
root and not be writable by group or others, is bounded in size, and must match the schema
exactly (unknown keys are refused, so an old or crafted journal naming programs or files is
never acted on).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, HardwareControlError

ENV_DIR = "GREENLLM_CONTROL_DIR"
ENV_WAIT = "GREENLLM_CONTROL_WAIT_S"
SYSTEM_DIR = Path("/var/lib/greenllm/control")
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
JOURNAL_VERSION = 2
MAX_JOURNAL_BYTES = 64 * 1024
_TOP_KEYS = {
    "version",
    "cap",
    "device_id",
    "params",
    "original",
    "requested",
    "pid",
    "uid",
    "boot_id",
    "written_at_unix_s",
    "describe",
}
_REQUIRED = {"version", "cap", "device_id", "params", "original", "pid", "boot_id"}


def user_dir() -> Path:
    from ..paths import cache_root

    return cache_root() / "control"


def _writable(folder: Path) -> bool:
    """Whether this process can create files in ``folder`` (or create it)."""
    p = folder
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK)


def control_dir() -> Path:
    """The directory this process writes journals and locks to (see the module docstring)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    if _writable(SYSTEM_DIR):
        return SYSTEM_DIR
    return user_dir()


def search_dirs() -> list[Path]:
    """Every directory a journal may be in: ``$GREENLLM_CONTROL_DIR`` alone when set."""
    env = os.environ.get(ENV_DIR)
    if env:
        return [Path(env)]
    out: list[Path] = []
    for d in (control_dir(), SYSTEM_DIR, user_dir()):
        if d not in out:
            out.append(d)
    return out


def wait_default() -> float:
    """Seconds to wait for a busy device: ``$GREENLLM_CONTROL_WAIT_S``, else 0 (fail at once)."""
    raw = os.environ.get(ENV_WAIT)
    if not raw:
        return 0.0
    return check_wait(raw, ENV_WAIT)


def check_wait(value: Any, field: str = "wait_s") -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{field}: {str(value)[:40]!r} is not a number of seconds") from None
    if not math.isfinite(v) or not 0 <= v <= 7 * 24 * 3600:
        raise ConfigError(f"{field}: {v} must be between 0 and 604800 seconds")
    return v


def read_boot_id(path: str | Path = BOOT_ID_PATH) -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``); ``"unknown"`` where there is none."""
    try:
        return Path(path).read_text().strip()[:64] or "unknown"
    except OSError:
        return "unknown"


def device_key(cap_name: str, device_id: str) -> str:
    """A safe file stem for a device: ``nvml-GPU-...``; never a path."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(device_id))[:120].lstrip(".")
    return f"{cap_name}-{safe or 'unknown'}"


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:  # a zombie (killed, not yet reaped) is not running
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        return stat_line.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stale_reason(entry: dict[str, Any], boot_id: str) -> str:
    """Why a journal found with its device lock free is stale (for messages)."""
    pid = entry.get("pid")
    if entry.get("boot_id") != boot_id:
        return f"it was written by pid {pid} before the last reboot"
    if not pid_alive(pid):
        return f"pid {pid} that wrote it is no longer running"
    return f"pid {pid} is running but does not hold the device lock (pid reused)"


# ---------------------------------------------------------------- the per-device lock


def _read_pid(path: Path) -> int | None:
    try:
        with open(path, "rb") as fh:
            text = fh.read(32).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class DeviceLock:
    """An exclusive ``flock`` on ``path`` naming its holder's pid; ``acquire`` / ``release``."""

    def __init__(self, path: str | Path, what: str):
        self.path, self.what = Path(path), what
        self.fd: int | None = None

    def acquire(self, wait_s: float = 0.0, journal: Path | None = None) -> None:
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise HardwareControlError(
                f"cannot open the control lock {str(self.path)!r} ({exc.strerror}): power "
                f"control needs write access there; run as root (sudo) or set {ENV_DIR}"
            ) from None
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise HardwareControlError(
                        f"cannot lock {str(self.path)!r}: {exc.strerror}"
                    ) from None
                if time.monotonic() >= deadline:
                    os.close(fd)
                    pid = self.holder(journal)
                    who = f"pid {pid}" if pid else "another process"
                    waited = f" (waited {wait_s:g} s)" if wait_s > 0 else ""
                    raise HardwareControlError(
                        f"{self.what} is in use by {who}{waited}: it holds {str(self.path)!r}; "
                        f"wait for it to finish, or set {ENV_WAIT}=SECONDS to wait"
                    ) from None
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def holder(self, journal: Path | None = None) -> int | None:
        pid = _read_pid(self.path)
        if pid is None and journal is not None:
            with contextlib.suppress(Exception):
                entry = json.loads(journal.read_bytes()[:MAX_JOURNAL_BYTES])
                pid = entry.get("pid") if isinstance(entry.get("pid"), int) else None
        return pid

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        with contextlib.suppress(Exception):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing drops the flock


def lock_holder(path: str | Path) -> int | None:
    """The pid holding the lock at ``path`` (0 when held by an unnamed holder), else None.

    Only probes (a shared lock taken and dropped at once); never blocks."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_pid(Path(path)) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# ---------------------------------------------------------------- journal files


def _refuse(path: Path, why: str) -> HardwareControlError:
    return HardwareControlError(
        f"control journal {str(path)!r} refused: {why}; greenllm does not act on it -- inspect "
        "it, put the setting back by hand if needed (nvidia-smi -pl / nvpmodel -m), delete it"
    )


def write_journal(path: Path, data: dict[str, Any]) -> None:
    """Atomically (temp file + fsync + rename), mode 0644, owned by this process's user."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        os.fchmod(fd, 0o644)  # not group/other-writable whatever the umask
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(Exception):
            tmp.unlink()
        raise
    os.replace(tmp, path)


def _scalar(v: Any) -> bool:
    return (
        isinstance(v, (int, float, str))
        and not isinstance(v, bool)
        and (not isinstance(v, float) or math.isfinite(v))
        and (not isinstance(v, str) or len(v) <= 64)
    )


def read_journal(path: str | Path, uid: int | None = None) -> dict[str, Any] | None:
    """A validated journal, or None when there is none. Refuses (HardwareControlError) a
    symlink, a file owned by another user (not root), one writable by group/others, an
    oversized or non-JSON file, and anything that is not exactly a greenllm v2 journal."""
    from . import POWER_CAPS

    p = Path(path)
    uid = os.getuid() if uid is None else uid
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refuse(p, "it is a symbolic link") from None
        raise HardwareControlError(
            f"cannot read control journal {str(p)!r}: {exc.strerror}"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(p, "it is not a regular file")
        if st.st_uid not in (uid, 0):
            raise _refuse(p, f"it is owned by uid {st.st_uid}, not by you (uid {uid}) or root")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise _refuse(
                p, f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
            )
        if st.st_size > MAX_JOURNAL_BYTES:
            raise _refuse(p, f"it is {st.st_size} bytes, more than a journal ever is")
        raw = os.read(fd, MAX_JOURNAL_BYTES + 1)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _refuse(p, f"it is not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(data, dict):
        raise _refuse(p, "it is not a JSON object")
    if data.get("version") != JOURNAL_VERSION:
        raise _refuse(
            p,
            f"it is journal version {str(data.get('version'))[:10]!r}, not "
            f"{JOURNAL_VERSION} (older journals named programs to run)",
        )
    extra = sorted(set(data) - _TOP_KEYS)
    missing = sorted(_REQUIRED - set(data))
    if extra or missing:
        raise _refuse(
            p,
            "unexpected keys " + ", ".join(k[:30] for k in extra[:5])
            if extra
            else "missing keys " + ", ".join(missing),
        )
    name = data["cap"]
    if not isinstance(name, str) or name not in POWER_CAPS.names():
        raise _refuse(p, f"unknown power control {str(name)[:30]!r}")
    if not isinstance(data["device_id"], str) or not data["device_id"]:
        raise _refuse(p, "no device identity")
    if not isinstance(data["params"], dict):
        raise _refuse(p, "'params' is not a mapping")
    allowed = set(getattr(POWER_CAPS.get(name), "JOURNAL_KEYS", ()))
    extra = sorted(set(data["params"]) - allowed)
    if extra:
        raise _refuse(
            p,
            "'params' names "
            + ", ".join(k[:30] for k in extra[:5])
            + ", which greenllm never writes (program paths and files are never taken "
            "from a journal)",
        )
    if not all(_scalar(v) or isinstance(v, bool) for v in data["params"].values()):
        raise _refuse(p, "'params' values must be plain numbers, strings or booleans")
    for key in ("original", "requested"):
        if key in data and not _scalar(data[key]):
            raise _refuse(p, f"{key!r} is not a plain number or short string")
    if not isinstance(data["pid"], int) or isinstance(data["pid"], bool):
        raise _refuse(p, "'pid' is not an integer")
    return data


def journals_in(folder: Path) -> list[Path]:
    """The journal files in ``folder`` (``<cap>-<device>.json``), sorted."""
    try:
        return sorted(q for q in folder.glob("*.json") if not q.name.startswith("."))
    except OSError:
        return []
