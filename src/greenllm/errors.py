"""Every failure a user can cause is a GreenLLMError (or a child).

The CLI turns one into a single line on stderr and exit code 2; the Python API raises it.
Messages name the field, file or setting at fault and, where there is one, the fix.
"""

from __future__ import annotations


class GreenLLMError(Exception):
    """A failure the user can act on. ``str(err)`` is the whole message, one line."""

    exit_code = 2


class ConfigError(GreenLLMError):
    """A recipe, step or CLI option is malformed (names the field path)."""


class UnknownNameError(ConfigError):
    """A registry lookup failed (carries the did-you-mean suggestion)."""

    def __init__(self, kind: str, name: str, known: list[str], suggestion: str | None = None):
        self.kind, self.name, self.known, self.suggestion = kind, name, list(known), suggestion
        msg = f"unknown {kind} {name!r}"
        if suggestion:
            msg += f"; did you mean {suggestion!r}?"
        if known:
            msg += f" (known: {', '.join(sorted(known))})"
        super().__init__(msg)


class DataError(GreenLLMError):
    """An input file is missing, empty or malformed (names the file and line)."""


class MeterError(GreenLLMError):
    """A meter cannot be read (names the device/file and the fix)."""


class MeterUnavailable(MeterError):
    """A meter has no device here; ``reason`` says why."""


class HardwareControlError(GreenLLMError):
    """A power cap / power mode could not be applied or restored."""


class MissingDependencyError(GreenLLMError):
    """An optional SDK is not installed; the message names the pip extra."""

    def __init__(self, package: str, extra: str | None = None, purpose: str = ""):
        fix = f"pip install 'greenllm[{extra}]'" if extra else f"pip install {package}"
        what = f" for {purpose}" if purpose else ""
        super().__init__(f"{package} is required{what} but is not installed; run: {fix}")


class MissingBinaryError(MissingDependencyError):
    """An external program greenllm runs (llama.cpp's ``llama-bench`` / ``llama-server``) is not
    found or not runnable; the message names the environment variable and how to get it."""

    def __init__(self, message: str):
        GreenLLMError.__init__(self, message)


class UnsupportedError(GreenLLMError):
    """The method cannot run on this device / with this model (says why)."""


class ModelError(GreenLLMError):
    """A model cannot be loaded, saved or reloaded."""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message, for a one-line error (``limit`` characters
    at most); the exception's type name when it has no message."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def require(module: str, extra: str | None = None, purpose: str = ""):
    """Import an optional SDK or raise MissingDependencyError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised through the adapters
        raise MissingDependencyError(module.split(".")[0], extra, purpose) from exc


class StoreError(GreenLLMError):
    """The results store or output directory cannot be used: in use by another run, read-only,
    full or not writable (names the path, the cause and the fix)."""
