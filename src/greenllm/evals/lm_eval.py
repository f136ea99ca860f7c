"""``lm_eval``: run any lm-evaluation-harness task on the in-memory model (optional extra).

The model and tokenizer are wrapped in ``lm_eval.models.huggingface.HFLM(pretrained=model,
tokenizer=tokenizer)`` and handed to ``lm_eval.simple_evaluate``. lm-eval fetches task data
from the Hugging Face hub unless the task reads local files (``include_path`` may name a
folder of task YAMLs, e.g. with ``dataset_path: json`` and local ``data_files``); every
failure inside lm-eval is reported as one GreenLLMError naming the task.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError, to_dict
from ..errors import GreenLLMError, require
from .base import EvalSpec, make_result

_PRIMARY = (
    "acc",
    "acc_norm",
    "acc_stderr",
    "acc_norm_stderr",
    "em",
    "f1",
    "exact_match",
    "perplexity",
    "word_perplexity",
    "byte_perplexity",
    "bits_per_byte",
)


@dataclass
class LmEvalConfig:
    tasks: list[str] = field(default_factory=list)
    num_fewshot: int | None = None
    limit: int | None = None
    batch_size: int = 8
    include_path: str | None = None
    include_defaults: bool = True  # False: only the tasks under include_path (faster)
    add_bos_token: bool | None = None

    def validate(self) -> None:
        if not self.tasks:
            raise ConfigError("tasks: give at least one lm-eval task name, e.g. [arc_easy]")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit: must be at least 1, got {self.limit}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be at least 1, got {self.batch_size}")


def flatten_results(results: dict[str, Any], task: str) -> dict[str, float | None]:
    """lm-eval's ``{'acc,none': 0.5, 'acc_stderr,none': 0.1, ...}`` -> ``{'acc': 0.5, ...}``."""
    out: dict[str, float | None] = {}
    for key, value in (results.get(task) or {}).items():
        name, _, filt = key.partition(",")
        if name == "alias" or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if filt not in ("", "none") and name in out:
            continue
        out[name] = float(value)
    return out


def run(model: Any, tokenizer: Any, cfg: LmEvalConfig, *, progress: bool = False):
    t0 = time.perf_counter()
    lm_eval = require("lm_eval", "lmeval", "the lm_eval evaluator")
    hf = require("lm_eval.models.huggingface", "lmeval", "the lm_eval evaluator")
    tasks_mod = require("lm_eval.tasks", "lmeval", "the lm_eval evaluator")
    try:
        lm = hf.HFLM(
            pretrained=model,
            tokenizer=tokenizer,
            batch_size=cfg.batch_size,
            add_bos_token=cfg.add_bos_token,
        )
        manager = tasks_mod.TaskManager(
            include_path=cfg.include_path, include_defaults=cfg.include_defaults
        )
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(cfg.tasks),
            num_fewshot=cfg.num_fewshot,
            limit=cfg.limit,
            task_manager=manager,
            log_samples=False,
            bootstrap_iters=1000,
        )
    except GreenLLMError:
        raise
    except Exception as exc:  # lm-eval raises many types (hub access, KeyError, ValueError)
        msg = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise GreenLLMError(
            f"lm_eval failed on tasks {', '.join(cfg.tasks)}: "
            f"{type(exc).__name__}: {msg} (no network here: only tasks whose "
            f"data is local can run; see include_path)"
        ) from None
    if not out or not out.get("results"):
        raise GreenLLMError(f"lm_eval returned no results for {', '.join(cfg.tasks)}")
    first = cfg.tasks[0]
    metrics = flatten_results(out["results"], first)
    n_samples = out.get("n-samples", {}).get(first, {})
    n = int(n_samples.get("effective", n_samples.get("original", 0)) or 0)
    others = {t: flatten_results(out["results"], t) for t in out["results"] if t != first}
    settings = {
        **to_dict(cfg),
        "lm_eval_version": getattr(lm_eval, "__version__", ""),
        "other_tasks": others,
    }
    return make_result(f"lm_eval:{first}", n, metrics, t0, settings)


SPEC = EvalSpec("lm_eval", LmEvalConfig, run, "any lm-evaluation-harness task (optional extra)")
