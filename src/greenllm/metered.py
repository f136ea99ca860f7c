"""Evaluations inside a metered window: the energy and time an evaluation costs, per item.

``run_eval_metered(spec, model, tokenizer, cfg, meters, hz)`` runs one evaluator inside one
``measure()`` window while a forward pre-hook counts the tokens that go through the model
(``tokens_processed``: every input position of every forward call, padding included), and
returns the evaluator's ``EvalResult`` with ``energy`` (the window) and ``cost``:

* ``energy_j``, ``net_energy_j`` (idle-subtracted, when idle power is known), ``duration_s``,
  ``items`` (the evaluator's n), ``tokens_processed``;
* ``energy_per_item_j`` / ``energy_per_item_wh``, ``latency_per_item_s``;
* ``edp_js`` = energy per item x latency per item (greenllm's per-inference EDP) and
  ``run_edp_js`` = whole-run energy x whole-run time (the convention of the small-language-model
  study's tables; ``run_edp_js = items^2 x edp_js``), both also per billion parameters;
* ``tokens_per_s``, ``tokens_per_wh``, ``mean_power_w``, ``wh_per_b_params`` (per item) and
  ``run_wh_per_b_params`` (whole run);
* ``accuracy_per_wh``: the evaluator's accuracy (%) divided by the energy per item in Wh.

Evaluators never know they are measured (they do not import meters or measure).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from .results import EnergyReport, EvalResult
from .units import J_PER_WH

ACCURACY_KEYS = ("acc_norm", "acc", "f1", "em", "exact_match")


@contextlib.contextmanager
def count_tokens(model) -> Iterator[list[int]]:
    """Counts the input positions embedded by ``model`` (a one-element list): a forward
    pre-hook on the input embedding, which every path into the model goes through (also
    evaluators that call the inner decoder and the head separately)."""
    counter = [0]
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    target = emb if emb is not None else model
    if not hasattr(target, "register_forward_pre_hook"):  # a runtime (llama.cpp, ONNX): no hook
        counter[0] = -1
        yield counter
        return

    def hook(module, args):
        ids = args[0] if args else None
        if hasattr(ids, "numel"):
            counter[0] += int(ids.numel())
        return None

    handle = target.register_forward_pre_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()


def _accuracy_pct(metrics: dict[str, Any]) -> float | None:
    for k in ACCURACY_KEYS:
        v = metrics.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v) * 100.0
    return None


def eval_cost(
    result: EvalResult,
    report: EnergyReport,
    tokens: int | None,
    b_params: float | None,
    idle_power_w: float | None = None,
) -> dict[str, Any]:
    """The per-item cost of an evaluation from its window (see the module docstring)."""
    e = float(report.energy_j)
    t = float(report.duration_s)
    n = max(int(result.n), 1)
    net = None if idle_power_w is None else max(e - idle_power_w * t, 0.0)
    e_item, t_item = e / n, t / n
    acc = _accuracy_pct(result.metrics)
    wh_item = e_item / J_PER_WH
    per_b = (lambda x: x / b_params) if b_params else (lambda x: None)
    return {
        "energy_j": e,
        "net_energy_j": net,
        "duration_s": t,
        "items": n,
        "tokens_processed": None if tokens is None else int(tokens),
        "energy_per_item_j": e_item,
        "energy_per_item_wh": wh_item,
        "net_energy_per_item_j": None if net is None else net / n,
        "latency_per_item_s": t_item,
        "edp_js": e_item * t_item,
        "run_edp_js": e * t,
        "edp_js_per_b_params": per_b(e_item * t_item),
        "run_edp_js_per_b_params": per_b(e * t),
        "tokens_per_s": tokens / t if tokens is not None and t > 0 else None,
        "tokens_per_wh": tokens / (e / J_PER_WH) if tokens is not None and e > 0 else None,
        "mean_power_w": e / t if t > 0 else None,
        "wh_per_b_params": per_b(wh_item),
        "run_wh_per_b_params": per_b(e / J_PER_WH),
        "accuracy_pct": acc,
        "accuracy_per_wh": acc / wh_item if acc is not None and wh_item > 0 else None,
        "meter": "+".join(report.meters) if report.meters else report.method,
        "boundary": _boundary(report),
        "estimated": bool(report.estimated),
        "invalid": list(_invalid(report)),
    }


def _boundary(report: EnergyReport) -> str:
    from .meters.base import boundary_of

    return boundary_of(report.meters or ())


def _invalid(report: EnergyReport) -> list[str]:
    from .measure import invalid_window_reasons

    return invalid_window_reasons(report)


def run_eval_metered(
    spec: Any,
    model,
    tokenizer,
    cfg: Any,
    meters: Any,
    hz: float = 10.0,
    *,
    idle_power_w: float | None = None,
    progress: bool = False,
) -> EvalResult:
    """Run one evaluator inside a metered window; see the module docstring. ``spec`` is an
    evaluator spec (``EVALS.get(key)``) or a callable ``score(progress=...) -> EvalResult``
    (e.g. scoring through another runtime, ``evals.base.run_with_runtime``)."""
    from .measure import measure
    from .models import param_count

    try:
        b_params: float | None = param_count(model) / 1e9
    except Exception:  # noqa: BLE001 - a runtime object: its own count, if it has one
        n = getattr(model, "n_params", None)
        b_params = n / 1e9 if n else None
    with count_tokens(model) as counter:
        with measure(meters, hz=hz) as handle:
            if hasattr(spec, "run"):
                result = spec.run(model, tokenizer, cfg, progress=progress)
            else:
                result = spec(progress=progress)
    report = handle.report
    tokens = None if counter[0] < 0 else counter[0]
    cost = eval_cost(result, report, tokens, b_params, idle_power_w)
    return dataclasses.replace(result, energy=report, cost=cost)


__all__ = ["run_eval_metered", "eval_cost", "count_tokens"]
