"""Steps transform a model: quantize, prune, distill, lora, train.

Each step is a config dataclass plus a handler, registered in ``STEPS`` under the key used in
YAML, the CLI, Python and the docs. Step modules never import torch at module level (recipes
validate on a machine without torch) and never import meters or control: the runner measures
them. ``compress()`` applies a list of steps in order.
"""

from __future__ import annotations

from .base import STEPS, StepContext, StepSpec, apply_step, compress, parse_step, parse_steps

__all__ = [
    "STEPS",
    "StepContext",
    "StepSpec",
    "apply_step",
    "compress",
    "parse_step",
    "parse_steps",
]
