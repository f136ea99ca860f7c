"""Evaluators score a model: perplexity, choice (MMLU/HellaSwag/Winogrande/ARC/generic),
squad, lm_eval. Registry ``EVALS``: key -> EvalSpec(config_cls, run). Evals never import
meters or control; torch is imported inside functions only (recipes validate without it).
"""

from __future__ import annotations

from .base import EVALS, evaluate

__all__ = ["EVALS", "evaluate"]
