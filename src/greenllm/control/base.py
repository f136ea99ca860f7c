"""The PowerCap protocol and ``capped()``: change a hardware setting, always put it back.

Order of operations in ``capped(cap, value)``:

1. check ``value`` against ``cap.allowed()`` (nothing is touched if it is out of range);
2. read the ORIGINAL setting with ``cap.get()``;
3. write a journal (JSON, atomically: temp file + rename) naming the cap, how to rebuild it,
   the original and the requested value -- before anything changes;
4. install SIGINT / SIGTERM handlers (main thread only), then ``cap.set(value)``;
5. on normal exit, exception, SIGINT or SIGTERM: ``cap.set(original)``, remove the journal,
   put the previous signal handlers back. A signal is then passed on: SIGINT to the previous
   Python handler (KeyboardInterrupt by default), SIGTERM to the previous handler, or, if that
   was the default action, re-delivered so the process ends with the conventional status
   (-15 / 143).

After a hard kill (SIGKILL, power loss) the journal stays; ``restore_from_journal()`` (the
``greenllm control restore`` command) rebuilds the cap from it and sets the original back.
Called from a thread other than the main thread, ``capped`` cannot install signal handlers
(Python allows them in the main thread only): restoring on return and exception still works,
and the journal covers the signals.

No torch and no vendor SDK here: adapters import theirs through ``greenllm.errors.require``.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

from ..errors import HardwareControlError
from ..fsutil import atomic_write

JOURNAL_VERSION = 1


@runtime_checkable
class PowerCap(Protocol):
    """A hardware setting that can be read, changed and put back.

    ``name`` is the registry key in ``greenllm.control.POWER_CAPS`` (``nvml``, ``jetson``).
    ``allowed()`` describes the values ``set`` accepts (a (min, max) range or a list);
    ``check(value)`` raises HardwareControlError listing them; ``journal_params()`` is the
    JSON-able mapping that ``from_journal(params)`` (a classmethod) turns back into the cap.
    """

    name: str

    def get(self) -> Any: ...
    def set(self, value: Any) -> None: ...
    def allowed(self) -> Any: ...
    def check(self, value: Any) -> Any: ...
    def describe(self) -> str: ...
    def journal_params(self) -> dict[str, Any]: ...


def default_journal_path() -> Path:
    from ..models import cache_root

    return cache_root() / "control-journal.json"


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True), fsync=True)


def read_journal(path: str | Path | None = None) -> dict[str, Any] | None:
    """The journal's content, or None when there is none; a corrupt one is an error."""
    p = Path(path) if path else default_journal_path()
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise HardwareControlError(f"control journal {str(p)!r} is unreadable ({exc}); "
                                   "inspect it, restore the setting by hand, then delete it") from None
    if not isinstance(data, dict) or "cap" not in data or "original" not in data:
        raise HardwareControlError(f"control journal {str(p)!r} is not a greenllm journal "
                                   "(no 'cap' / 'original'); delete it if it is stale")
    return data


def cap_from_journal(entry: dict[str, Any]) -> PowerCap:
    from . import POWER_CAPS

    cls = POWER_CAPS.get(str(entry["cap"]))
    return cls.from_journal(dict(entry.get("params") or {}))


def _put_back(cap: PowerCap, original: Any) -> None:
    """``cap.restore(original)`` when the cap has one (e.g. clocks to restore), else set()."""
    restore = getattr(cap, "restore", None)
    if callable(restore):
        restore(original)
    else:
        cap.set(original)


class _Restorer:
    """Puts the original back exactly once, from wherever it is asked first."""

    def __init__(self, cap: PowerCap, original: Any, journal: Path):
        self.cap, self.original, self.journal = cap, original, journal
        self.done = False
        self.lock = threading.RLock()

    def restore(self) -> None:
        with self.lock:
            if self.done:
                return
            _put_back(self.cap, self.original)
            self.done = True
            with contextlib.suppress(FileNotFoundError):
                self.journal.unlink()


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _install_handlers(restorer: _Restorer) -> dict[int, Any]:
    """Install restore-then-chain handlers; returns the previous ones (empty off-main-thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}

    def handler(signum, frame):
        prev = previous.get(signum, signal.SIG_DFL)
        try:
            restorer.restore()
        finally:
            _uninstall_handlers(previous)
        if callable(prev):
            prev(signum, frame)          # e.g. default_int_handler -> KeyboardInterrupt
        elif prev == signal.SIG_DFL:
            os.kill(os.getpid(), signum)  # re-deliver with the default action: conventional exit
        # SIG_IGN was not replaced (see below), so nothing else to do

    for sig in _SIGNALS:
        prev = signal.getsignal(sig)
        if prev == signal.SIG_IGN or prev is None:
            continue  # the process ignores it / it belongs to non-Python code: leave it alone
        previous[sig] = prev
        signal.signal(sig, handler)
    return previous


def _uninstall_handlers(previous: dict[int, Any]) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig, prev in list(previous.items()):
        signal.signal(sig, prev)
    previous.clear()


@contextlib.contextmanager
def capped(cap: PowerCap, value: Any, journal: str | Path | None = None) -> Iterator[Any]:
    """Hold ``cap`` at ``value`` inside the block; yields the original setting.

    Refuses to start when a journal from an earlier, unrestored run exists (run
    ``greenllm control restore`` first), so an original is never overwritten by a capped value.
    """
    path = Path(journal) if journal else default_journal_path()
    value = cap.check(value)
    if path.exists():
        raise HardwareControlError(
            f"control journal {str(path)!r} exists: an earlier run did not restore "
            f"{read_journal(path)['cap']!r}; run `greenllm control restore --journal {path}` first")
    original = cap.get()
    _write_json_atomic(path, {
        "version": JOURNAL_VERSION, "cap": cap.name, "params": cap.journal_params(),
        "original": original, "requested": value, "describe": cap.describe(),
        "pid": os.getpid(), "written_at_unix_s": time.time(),
    })
    restorer = _Restorer(cap, original, path)
    previous = _install_handlers(restorer)
    try:
        try:
            cap.set(value)
        except BaseException:
            # nothing changed (or it failed half-way): put back what we read, drop the journal
            with contextlib.suppress(Exception):
                restorer.restore()
            restorer.done = True
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise
        yield original
    finally:
        try:
            restorer.restore()
        finally:
            _uninstall_handlers(previous)


def restore_from_journal(path: str | Path | None = None) -> dict[str, Any] | None:
    """Put back the original setting recorded in the journal and delete it.

    Returns the journal entry that was restored, or None when there was no journal.
    """
    p = Path(path) if path else default_journal_path()
    entry = read_journal(p)
    if entry is None:
        return None
    cap = cap_from_journal(entry)
    _put_back(cap, entry["original"])
    with contextlib.suppress(FileNotFoundError):
        p.unlink()
    return entry
