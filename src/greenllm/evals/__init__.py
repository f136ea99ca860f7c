"""Evaluators score a model: perplexity, choice (MMLU/HellaSwag/Winogrande/ARC/generic),
squad, lm_eval. Registry ``EVALS``: key -> EvalSpec(config_cls, run). Evals never import
meters or control; torch is imported inside functions only (recipes validate without it).
"""
from __future__ import annotations

from ..registry import Registry

EVALS: Registry = Registry("evaluator", {
    "perplexity": "greenllm.evals.perplexity:SPEC",
    "choice": "greenllm.evals.choice:SPEC",
    "squad": "greenllm.evals.squad:SPEC",
    "lm_eval": "greenllm.evals.lm_eval:SPEC",
})


def evaluate(*args, **kwargs):
    from .base import evaluate as _evaluate
    return _evaluate(*args, **kwargs)


__all__ = ["EVALS", "evaluate"]
