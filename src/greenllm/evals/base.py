"""The evaluator contract: ``EvalSpec(key, config_cls, run, summary)`` and ``evaluate``.

``run(model, tokenizer, cfg, *, progress=False) -> EvalResult``: ``progress`` (a bar on stderr)
is a call option, not a setting, so it never enters a result's settings or a store key.
``evaluate(model, tokenizer, task, *, progress=False, **settings)``
accepts an evaluator key (``perplexity``, ``choice``, ``squad``, ``lm_eval``) or a choice task
name (``hellaswag``, ``mmlu``, ``winogrande``, ``arc``), which maps to ``choice`` with
``task=``. Data sources are paths or ``builtin:<name>`` (sets shipped in greenllm/data).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..builtin_data import BUILTINS, DATA_DIR, resolve_data  # noqa: F401 (re-exported)
from ..config import parse_config, to_dict
from ..errors import DataError, UnknownNameError
from ..registry import Registry, did_you_mean
from ..results import EvalResult

CHOICE_TASKS = ("hellaswag", "mmlu", "winogrande", "arc", "jsonl")
# builtin:<name> data sets live in greenllm.builtin_data (shared with steps and bench)


@dataclass(frozen=True)
class EvalSpec:
    key: str
    config_cls: type
    run: Callable[..., EvalResult]
    summary: str = ""


EVALS: Registry[EvalSpec] = Registry(
    "evaluator",
    {
        "perplexity": "greenllm.evals.perplexity:SPEC",
        "choice": "greenllm.evals.choice:SPEC",
        "squad": "greenllm.evals.squad:SPEC",
        "lm_eval": "greenllm.evals.lm_eval:SPEC",
        "fidelity": "greenllm.evals.fidelity:SPEC",
    },
)


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a folder's files (sorted relative names + contents)."""
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(f.read_bytes())
    else:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def mean_stderr(values: list[float]) -> float | None:
    """lm-eval's ``mean_stderr``: sample standard deviation / sqrt(n); None for n < 2."""
    n = len(values)
    if n < 2:
        return None
    mu = sum(values) / n
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


@contextmanager
def progress_bar(total: int, description: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar (stderr) when enabled; yields ``advance(n)``."""
    if not enabled or total <= 0:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as prog:
        tid = prog.add_task(description, total=total)
        yield lambda n: prog.update(tid, advance=n)


def make_result(
    task: str, n: int, metrics: dict[str, float | None], t0: float, settings: dict[str, Any]
) -> EvalResult:
    return EvalResult(
        task=task, n=n, metrics=metrics, duration_s=time.perf_counter() - t0, settings=settings
    )


def parse_eval(task: str, settings: dict[str, Any] | None = None, path: str = "eval"):
    """``(task, settings)`` -> ``(evaluator key, config)``; choice task names map to choice."""
    settings = dict(settings or {})
    key = task
    if task in CHOICE_TASKS and task not in EVALS:
        if "task" in settings and settings["task"] != task:
            raise DataError(f"{path}: task {task!r} conflicts with task={settings['task']!r}")
        settings["task"] = task
        key = "choice"
    if key not in EVALS:
        known = sorted(set(EVALS.names()) | set(CHOICE_TASKS) - {"jsonl"})
        raise UnknownNameError("evaluation task", task, known, did_you_mean(task, known))
    spec = EVALS.get(key)
    return key, parse_config(spec.config_cls, settings, f"{path}.{key}")


def evaluate(
    model: Any,
    tokenizer: Any,
    task: str,
    *,
    progress: bool = False,
    runtime: str = "torch",
    threads: int | None = None,
    **settings: Any,
) -> EvalResult:
    """Score ``model`` on ``task`` (an evaluator key or a choice task name); ``progress``
    shows a bar on stderr and changes nothing else. ``runtime`` / ``threads``: score through
    llama.cpp or ONNX Runtime logits instead (``run_with_runtime``)."""
    key, cfg = parse_eval(task, settings)
    return run_with_runtime(key, cfg, model, tokenizer, runtime, threads, progress=progress)


# --- runtime hook (issue 14) -------------------------------------------------------------------
LOGLIK_EVALS = ("perplexity", "choice")  # the evaluators that score through logits only


def run_with_runtime(
    key: str,
    cfg: Any,
    model: Any,
    tokenizer: Any,
    runtime: str = "torch",
    threads: int | None = None,
    *,
    progress: bool = False,
) -> EvalResult:
    """Run evaluator ``key``; with a runtime other than torch (or a runtime object as
    ``model``), through that runtime's logits (``greenllm.runtimes``), recorded in
    ``settings["runtime"]``."""
    import dataclasses
    import os

    from ..runtimes import is_runtime, open_runtime

    spec = EVALS.get(key)
    if runtime == "torch" and not is_runtime(model) and not isinstance(model, (str, os.PathLike)):
        return spec.run(model, tokenizer, cfg, progress=progress)
    if key not in LOGLIK_EVALS:
        from ..errors import UnsupportedError

        raise UnsupportedError(
            f"eval {key}: runs on runtime torch only; through llama.cpp / ONNX Runtime "
            f"greenllm scores {', '.join(LOGLIK_EVALS)}"
        )
    from ..runtimes.base import NO_LOGITS

    name = getattr(model, "name", runtime) if is_runtime(model) else runtime
    if name in NO_LOGITS:  # before a server starts
        from ..errors import UnsupportedError

        raise UnsupportedError(f"eval {key}: {NO_LOGITS[name]}")
    rt, owned = open_runtime(runtime, model, tokenizer, threads=threads)
    try:
        result = spec.run(rt, tokenizer, cfg, progress=progress)
    finally:
        if owned:
            rt.close()
    return dataclasses.replace(result, settings={**result.settings, "runtime": rt.info()})


def config_dict(cfg: Any) -> dict[str, Any]:
    return to_dict(cfg)
