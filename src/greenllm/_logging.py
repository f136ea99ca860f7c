"""Silence third-party log lines that say nothing to a greenllm user.

torchao logs a warning for each CUDA-only extension it cannot load on a CPU machine, and torch
logs a pytree deprecation for torchao's enums, on every transformers import. Those lines are
dropped; every other message from those loggers passes.
"""

from __future__ import annotations

import logging


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg.startswith("Failed to load") and ".so" in msg:
            return False
        if "is an Enum subclass and is now natively supported" in msg:
            return False
        return True


def quiet_third_party() -> None:
    for name in ("torchao", "torch.utils._pytree"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
