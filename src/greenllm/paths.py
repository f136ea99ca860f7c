"""Where greenllm keeps files on this machine. Stdlib only: every layer may use it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("GREENLLM_CACHE") or Path.home() / ".cache" / "greenllm")


__all__ = ["cache_root"]
