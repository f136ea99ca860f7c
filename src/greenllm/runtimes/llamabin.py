"""llama.cpp's own programs (``llama-bench``, ``llama-server``): where they are, and how greenllm
runs one as a child process that never outlives it.

Where: ``GREENLLM_LLAMA_BENCH`` / ``GREENLLM_LLAMA_SERVER`` (a path) when set, else the name on
``PATH``, else the folder ``make llama-tools`` builds into
(``$GREENLLM_CACHE/llama.cpp-<version>/bin``, ``GREENLLM_CACHE`` defaulting to
``~/.cache/greenllm``; the version of the installed llama-cpp-python first, then any other).
A set variable that names no runnable file is an error, never a silent fallback.

A child (``spawn``) writes stdout and stderr to a log file; on Linux it gets SIGTERM when
greenllm dies (``PR_SET_PDEATHSIG``), and ``stop`` (also registered with ``atexit`` by its
callers) terminates, then kills it. Stdlib only.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from ..errors import MissingBinaryError

PROGRAMS = {"llama-bench": "GREENLLM_LLAMA_BENCH", "llama-server": "GREENLLM_LLAMA_SERVER"}
BUILD_HINT = (
    "build both from the llama.cpp that llama-cpp-python vendors with `make llama-tools` (in a "
    "greenllm checkout; it prints the paths), or install llama.cpp"
)
LOG_TAIL_CHARS = 1500


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    """``greenllm.paths.cache_root()``, or its rule applied to ``env``."""
    if env is None:
        from ..paths import cache_root as root

        return root().expanduser()
    return Path(env.get("GREENLLM_CACHE") or Path.home() / ".cache" / "greenllm").expanduser()


def _installed_llama_cpp_python() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return None


def tool_dirs(env: Mapping[str, str] | None = None) -> list[Path]:
    """The ``bin`` folders ``make llama-tools`` may have filled, the installed
    llama-cpp-python's version first."""
    root = cache_root(env)
    first = _installed_llama_cpp_python()
    dirs = [root / f"llama.cpp-{first}" / "bin"] if first else []
    if root.is_dir():
        dirs += sorted(
            (p / "bin" for p in root.glob("llama.cpp-*") if p / "bin" not in dirs), reverse=True
        )
    return dirs


def _runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_binary(program: str, env: Mapping[str, str] | None = None) -> Path:
    """The path of ``llama-bench`` or ``llama-server`` (see the module doc), else
    MissingBinaryError naming the variable and ``make llama-tools``."""
    env = os.environ if env is None else env
    var = PROGRAMS[program]
    given = env.get(var, "").strip()
    if given:
        path = Path(given).expanduser()
        if _runnable(path):
            return path.resolve()
        why = "is not executable" if path.is_file() else "does not exist"
        raise MissingBinaryError(
            f"{var}={given}: {why}; point it at llama.cpp's {program}, or unset it and {BUILD_HINT}"
        )
    on_path = shutil.which(program, path=env.get("PATH"))
    if on_path:
        return Path(on_path).resolve()
    for d in tool_dirs(env):
        if _runnable(d / program):
            return (d / program).resolve()
    raise MissingBinaryError(
        f"llama.cpp's {program} was not found: {var} is not set, it is not on PATH and not in "
        f"{cache_root(env)}/llama.cpp-<version>/bin; set {var}=/path/to/{program}, or "
        f"{BUILD_HINT}"
    )


def build_facts(binary: Path) -> dict[str, Any]:
    """What the cache folder of ``make llama-tools`` says about its build (the llama-cpp-python
    version whose vendored llama.cpp it is), else {}."""
    stamp = binary.parent / ".built"
    folder = binary.parent.parent.name
    if stamp.is_file() and folder.startswith("llama.cpp-"):
        return {
            "built_from": f"llama-cpp-python {folder.removeprefix('llama.cpp-')} vendor/llama.cpp"
        }
    return {}


def log_tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The last ``chars`` characters of a log file, on one line ('' when unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(size - chars, 0))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def spawn(
    cmd: Sequence[str],
    log: IO[bytes],
    env: Mapping[str, str] | None = None,
    stdout: IO[bytes] | None = None,
) -> subprocess.Popen:
    """Start ``cmd`` with stderr (and stdout, unless ``stdout`` is given) into ``log`` and no
    stdin; on Linux the child gets SIGTERM when the thread that started it ends (greenllm
    exits or is killed)."""
    return subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=log if stdout is None else stdout,
        stderr=log,
        env=None if env is None else dict(env),
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )


def stop(proc: subprocess.Popen | None, grace_s: float = 5.0) -> int | None:
    """Terminate ``proc`` (SIGTERM, then SIGKILL after ``grace_s``) and reap it; its exit code
    (None when there was none)."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except ProcessLookupError:
            pass
    return proc.returncode
