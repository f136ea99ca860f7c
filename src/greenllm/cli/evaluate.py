"""``greenllm eval``: score a model on one task. No torch at module level.

    greenllm eval MODEL --task {perplexity,hellaswag,mmlu,winogrande,arc,squad,choice,lm_eval}
        --data PATH [--limit N] [--shots K] [--batch-size B] [--set key=value ...] [--json]

The task settings are parsed and the data path checked before the model is loaded, so a typo
costs nothing. ``--set`` passes any other evaluator setting (``stride=512``, ``split=val``,
``labels=dev-labels.lst``). For ``lm_eval``, ``--lm-task`` names lm-eval tasks (repeatable).
"""

from __future__ import annotations

import json
from typing import Any

import typer

from ..errors import ConfigError

TASKS = ("perplexity", "hellaswag", "mmlu", "winogrande", "arc", "squad", "choice", "lm_eval")
JSON_KEYS = (
    "task",
    "n",
    "acc",
    "acc_norm",
    "acc_stderr",
    "em",
    "f1",
    "perplexity",
    "word_perplexity",
    "byte_perplexity",
    "bits_per_byte",
    "duration_s",
)


def build_settings(
    task: str,
    data: str | None,
    limit: int | None,
    shots: int | None,
    batch_size: int | None,
    sets: list[str],
    lm_tasks: list[str],
) -> dict:
    from ..config import parse_scalar

    settings: dict[str, Any] = {}
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value")
        settings[key.strip()] = parse_scalar(value.strip())
    if task == "lm_eval":
        if data:
            raise ConfigError(
                "--data: lm_eval reads its tasks' own data; name the tasks with "
                "--lm-task (and local task YAMLs with --set include_path=DIR)"
            )
        if lm_tasks:
            settings["tasks"] = list(lm_tasks)
        if shots is not None:
            settings["num_fewshot"] = shots
    else:
        if lm_tasks:
            raise ConfigError("--lm-task: only used with --task lm_eval")
        if data is not None:
            settings["data"] = data
        elif task in ("hellaswag", "mmlu", "winogrande", "arc"):
            raise ConfigError(
                f"--data: {task} needs its data file or folder (there is no "
                f"network access to fetch it)"
            )
        if shots is not None:
            settings["shots"] = shots
    if limit is not None:
        settings["limit"] = limit
    if batch_size is not None:
        settings["batch_size"] = batch_size
    return settings


def check_data(key: str, cfg: Any) -> None:
    """Read the data once before the model is loaded, so a bad file fails in a second."""
    from ..evals.base import resolve_data

    if key == "choice":
        from ..evals.choice import choice_docs

        path = resolve_data(cfg.data, "--data")
        docs = choice_docs(cfg, path)
        if not docs:
            from ..errors import DataError

            raise DataError(f"{path}: no items to evaluate (empty file or folder)")
    elif key == "squad":
        from ..evals.squad import load_squad

        load_squad(resolve_data(cfg.data, "--data"))
    elif key == "perplexity":
        from ..evals.perplexity import load_documents

        load_documents(cfg.data, cfg.format, cfg.text_field)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def eval_cmd(
    model: str = typer.Argument(..., help="Hub id, local HF directory or .gguf file."),
    task: str = typer.Option(..., "--task", help="One of: " + ", ".join(TASKS) + "."),
    data: str | None = typer.Option(None, "--data", help="Data file/folder or builtin:<name>."),
    limit: int | None = typer.Option(None, "--limit", help="Score at most N items."),
    shots: int | None = typer.Option(None, "--shots", help="Few-shot examples (mmlu)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Items per batch."),
    sets: list[str] = typer.Option([], "--set", help="Other setting key=value (repeatable)."),
    lm_task: list[str] = typer.Option([], "--lm-task", help="lm-eval task name (lm_eval)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16, float16, auto."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON object."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    meter: str = typer.Option(
        "auto", "--meter", help="Meter the evaluation: auto, meter names joined by commas, or none."
    ),
    runtime: str = typer.Option(
        "torch",
        "--runtime",
        help="torch, llama.cpp or onnxruntime (perplexity and choice tasks score through the "
        "runtime's logits; a .gguf / .onnx MODEL runs as it is, another is exported first). "
        "llama-server gives no logits: evaluate its GGUF with llama.cpp.",
    ),
    threads: int | None = typer.Option(None, "--threads", help="Threads of the runtime."),
) -> None:
    """Score MODEL on a task (perplexity, multiple choice, SQuAD, lm-eval), metered."""
    from ..errors import UnknownNameError
    from ..evals.base import parse_eval, resolve_data
    from ..registry import did_you_mean

    if task not in TASKS:
        raise UnknownNameError("task", task, list(TASKS), did_you_mean(task, list(TASKS)))
    settings = build_settings(task, data, limit, shots, batch_size, sets, lm_task)
    key, cfg = parse_eval(task, settings, path="--task")
    if getattr(cfg, "data", None):
        resolve_data(cfg.data, "--data")
    check_data(key, cfg)
    from ..evals.base import run_with_runtime
    from ..runtimes import check_runtime, load_for_runtime

    check_runtime(runtime)
    meters = parse_meter_option(meter)
    m, tok = load_for_runtime(runtime, model, dtype=dtype)
    show = progress and not as_json

    def score(progress: bool = show):
        return run_with_runtime(key, cfg, m, tok, runtime, threads, progress=progress)

    if meters is None:
        result = score()
    else:
        from ..metered import run_eval_metered

        result = run_eval_metered(score, m, tok, cfg, meters, progress=show)
    flat = result.to_json()
    if as_json:
        out = {k: flat[k] for k in JSON_KEYS if k in flat and flat[k] is not None}
        out["settings"] = flat.get("settings", {})
        if flat.get("cost"):
            out["cost"] = flat["cost"]
        typer.echo(json.dumps(out, default=str))
        return
    typer.echo(f"{result.task}  n={result.n}  duration_s={result.duration_s:.2f}")
    c = result.cost
    if c:
        est = " (ESTIMATE)" if c.get("estimated") else ""
        typer.echo(
            f"  energy           {c['energy_j']:.4g} J{est}, {c['energy_per_item_j']:.4g} J/item, "
            f"{c['latency_per_item_s']:.4g} s/item, {c['tokens_processed']} tokens, "
            f"meter {c['meter']}"
        )
    for k, v in result.metrics.items():
        if v is None or k.endswith("_stderr"):
            continue
        err = result.metrics.get(f"{k}_stderr")
        typer.echo(f"  {k:<16} {_fmt(v)}" + (f"  ± {err:.4f}" if err is not None else ""))


def parse_meter_option(spec: str, allow_none: bool = True):
    """--meter: "auto", a checked list of meter names (did-you-mean on a typo), or, where
    ``allow_none``, None for "none" (no metering)."""
    text = spec.strip()
    if text == "none" and allow_none:
        return None
    if text == "auto":
        return "auto"
    from ..meters import METERS

    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        METERS.check(n)
    return names


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
