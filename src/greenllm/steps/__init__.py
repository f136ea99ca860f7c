"""Steps transform a model: quantize, prune, distill, lora, train.

Each step is a config dataclass plus a handler, registered in ``STEPS`` under the key used in
YAML, the CLI, Python and the docs. Step modules never import torch at module level (recipes
validate on a machine without torch) and never import meters or control: the runner measures
them. ``compress()`` applies a list of steps in order.
"""
from __future__ import annotations

from ..registry import Registry
from .base import StepContext, StepSpec, apply_step, compress, parse_step, parse_steps

STEPS: Registry[StepSpec] = Registry("step", {
    "quantize": "greenllm.steps.quantize:SPEC",
    "prune": "greenllm.steps.prune:SPEC",
    "distill": "greenllm.steps.distill:SPEC",
    "lora": "greenllm.steps.lora:SPEC",
    "train": "greenllm.steps.train:SPEC",
})

__all__ = ["STEPS", "StepContext", "StepSpec", "apply_step", "compress", "parse_step",
           "parse_steps"]
