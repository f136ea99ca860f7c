"""The PowerCap protocol and ``capped()``: change a hardware setting, always put it back.

Order of operations in ``capped(cap, value)``:

1. check ``value`` against ``cap.allowed()`` (nothing is touched if it is out of range);
2. take the device's lock (``flock`` on ``<control dir>/<cap>-<device id>.lock``, see
   ``control/journal.py``) for the whole time the cap is held: a second holder fails at once
   naming the holder's pid, or waits up to ``wait_s`` (``$GREENLLM_CONTROL_WAIT_S``);
3. a journal left by a holder that died (SIGKILL, power loss, reboot) is restored first, through
   this adapter, to the original it recorded -- with a warning -- and removed;
4. read the ORIGINAL setting with ``cap.get()`` (the true one: never a dead run's cap);
5. write the device's journal (JSON, atomically): cap, device identity, pid, boot id, the
   original and the requested value -- before anything changes;
6. install SIGINT / SIGTERM handlers (main thread only), then ``cap.set(value)``;
7. on normal exit, exception, SIGINT or SIGTERM: ``cap.set(original)``, remove the journal,
   put the previous signal handlers back, drop the lock. A signal is then passed on: SIGINT to
   the previous Python handler (KeyboardInterrupt by default), SIGTERM to the previous handler,
   or, if that was the default action, re-delivered so the process ends with the conventional
   status (-15 / 143).

After a hard kill the journal stays and the kernel drops the lock; ``restore_stale()`` (the
``greenllm control restore`` command) or the next ``capped()`` on that device puts the recorded
original back. A journal is data: it is restored only through greenllm's adapters
(``POWER_CAPS``), with program paths from the adapter's own configuration and the value checked
against the device's allowed range. Called from a thread other than the main thread, ``capped``
cannot install signal handlers: restoring on return and exception still works, and the journal
covers the signals.

No torch and no vendor SDK here: adapters import theirs through ``greenllm.errors.require``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import GreenLLMError, HardwareControlError
from . import journal as _j
from .journal import JOURNAL_VERSION, read_journal

log = logging.getLogger("greenllm.control")


@runtime_checkable
class PowerCap(Protocol):
    """A hardware setting that can be read, changed and put back.

    ``name`` is the registry key in ``greenllm.control.POWER_CAPS`` (``nvml``, ``jetson``).
    ``allowed()`` describes the values ``set`` accepts (a (min, max) range or a list);
    ``check(value)`` raises HardwareControlError listing them; ``device_id()`` is the device's
    identity (GPU UUID, Jetson board serial) that keys its journal and lock;
    ``journal_params()`` is the JSON-able data (only the adapter's ``JOURNAL_KEYS``, never
    a program path or a file) that the classmethod ``from_journal(params, **config)`` turns
    back into the cap, with ``config`` (``adapter_config()``: SDK handle, program paths) from
    the adapter's own construction.
    """

    name: str

    def get(self) -> Any: ...
    def set(self, value: Any) -> None: ...
    def allowed(self) -> Any: ...
    def check(self, value: Any) -> Any: ...
    def describe(self) -> str: ...
    def device_id(self) -> str: ...
    def journal_params(self) -> dict[str, Any]: ...


def journal_paths(cap: PowerCap, control_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(journal, lock) file paths of ``cap``'s device."""
    folder = Path(control_dir) if control_dir else _j.control_dir()
    key = _j.device_key(cap.name, cap.device_id())
    return folder / f"{key}.json", folder / f"{key}.lock"


def default_journal_path() -> Path:
    """The control directory journals are written to (kept for callers of the old name)."""
    return _j.control_dir()


def cap_from_journal(entry: dict[str, Any], config: dict[str, Any] | None = None) -> PowerCap:
    """Rebuild the cap a (validated) journal describes through its adapter, and check that it
    is the same device. ``config`` holds constructor arguments that never come from a journal
    (``pynvml=``, ``runner=``, program paths)."""
    from . import POWER_CAPS

    cls = POWER_CAPS.get(str(entry["cap"]))
    cap = cls.from_journal(dict(entry.get("params") or {}), **(config or {}))
    here = cap.device_id()
    if here != entry["device_id"]:
        raise HardwareControlError(
            f"the journal is for {entry['cap']} device {entry['device_id'][:80]!r}, but this "
            f"machine's is {here!r}: it cannot be restored here"
        )
    return cap


def _put_back(cap: PowerCap, original: Any) -> None:
    """``cap.restore(original)`` when the cap has one (e.g. clocks to restore), else set().
    Both check ``original`` against the device's allowed values first."""
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
            prev(signum, frame)  # e.g. default_int_handler -> KeyboardInterrupt
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


def _restore_entry(path: Path, entry: dict[str, Any], cap: PowerCap) -> None:
    _put_back(cap, entry["original"])
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def capped(
    cap: PowerCap,
    value: Any,
    *,
    control_dir: str | Path | None = None,
    wait_s: float | None = None,
    boot_id: str | None = None,
) -> Iterator[Any]:
    """Hold ``cap`` at ``value`` inside the block; yields the (true) original setting.

    ``control_dir``: where the device's journal and lock live (default ``control_dir()``);
    ``wait_s``: how long to wait for another holder of the device (default
    ``$GREENLLM_CONTROL_WAIT_S`` or 0: fail at once naming its pid); ``boot_id``: this boot's
    id (default ``/proc/sys/kernel/random/boot_id``).
    """
    value = cap.check(value)
    wait = _j.check_wait(wait_s) if wait_s is not None else _j.wait_default()
    boot = boot_id or _j.read_boot_id()
    path, lock_path = journal_paths(cap, control_dir)
    lock = _j.DeviceLock(lock_path, f"{cap.name} device {cap.device_id()}")
    lock.acquire(wait, journal=path)
    try:
        stale = read_journal(path)
        if stale is not None:
            if stale["cap"] != cap.name or stale["device_id"] != cap.device_id():
                raise HardwareControlError(
                    f"control journal {str(path)!r} is for another device "
                    f"({stale['cap']} {stale['device_id'][:80]!r}); delete it"
                )
            config: dict[str, Any] = getattr(cap, "adapter_config", dict)()
            _restore_entry(path, stale, cap_from_journal(stale, config))
            msg = (
                f"{cap.name} device {cap.device_id()} was left at {stale.get('requested')!r} "
                f"by a run that did not finish ({_j.stale_reason(stale, boot)}): restored "
                f"its original {stale['original']!r} first"
            )
            log.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
        original = cap.get()
        _j.write_journal(
            path,
            {
                "version": JOURNAL_VERSION,
                "cap": cap.name,
                "device_id": cap.device_id(),
                "params": cap.journal_params(),
                "original": original,
                "requested": value,
                "describe": cap.describe()[:200],
                "pid": os.getpid(),
                "uid": os.getuid(),
                "boot_id": boot,
                "written_at_unix_s": time.time(),
            },
        )
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
    finally:
        lock.release()


def restore_from_journal(
    path: str | Path, config: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Put back the original setting recorded in the journal at ``path`` and delete it.

    Takes the device's lock first: a journal whose writer is alive and holding the device is
    not stale (that process restores it itself) and is refused. Returns the restored entry, or
    None when there was no journal. ``config``: adapter constructor arguments (never taken
    from the journal), e.g. ``{"pynvml": fake}`` in tests.
    """
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return None
    lock = _j.DeviceLock(p.with_suffix(".lock"), f"the device of journal {str(p)!r}")
    try:
        lock.acquire(0.0, journal=p)
    except HardwareControlError as exc:
        raise HardwareControlError(
            f"{exc} (a running holder restores it itself; not stale)"
        ) from None
    try:
        entry = read_journal(p)
        if entry is None:
            return None
        _restore_entry(p, entry, cap_from_journal(entry, config))
        return entry
    finally:
        lock.release()


def restore_stale(
    dirs: list[Path] | None = None, config: dict[str, Any] | None = None
) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Restore every stale journal in ``dirs`` (default: ``journal.search_dirs()``).

    Returns ``(restored, problems)``: [(path, entry)] put back, and one message per journal
    that was not (in use by a running holder, refused, device error)."""
    done: list[tuple[Path, dict[str, Any]]] = []
    problems: list[str] = []
    for folder in dirs if dirs is not None else _j.search_dirs():
        for p in _j.journals_in(Path(folder)):
            try:
                entry = restore_from_journal(p, config)
            except GreenLLMError as exc:
                problems.append(str(exc))
                continue
            if entry is not None:
                done.append((p, entry))
    return done, problems
