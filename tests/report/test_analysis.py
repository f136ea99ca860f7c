"""Report arithmetic on known numbers: CI propagation, payback, not-greener, targets, Pareto."""

from __future__ import annotations

import math

import pytest

from greenllm.report import analysis as A


def test_rel_delta_and_propagated_ci():
    d, hw = A.rel_delta(80.0, 100.0, 4.0, 5.0)
    assert d == pytest.approx(-0.2)
    # (v/b) * sqrt((4/80)^2 + (5/100)^2) = 0.8 * sqrt(0.0025 + 0.0025)
    assert hw == pytest.approx(0.8 * math.sqrt(0.005))
    assert A.rel_delta(1.0, 0.0) == (None, None)
    assert A.rel_delta(None, 2.0) == (None, None)
    assert A.rel_delta(3.0, 2.0) == (pytest.approx(0.5), None)


def test_payback_known_numbers():
    # compressing cost 360 J; each request saves 0.5 - 0.2 = 0.3 J -> 1200 requests
    assert A.payback_inferences(360.0, 0.5, 0.2) == pytest.approx(1200.0)
    assert A.payback_inferences(360.0, 0.5, 0.5) is None  # no saving: never
    assert A.payback_inferences(360.0, 0.5, 0.7) is None  # costs more: never
    assert A.payback_inferences(0.0, 0.5, 0.2) == 0.0
    assert A.payback_inferences(10.0, None, 0.2) is None


def test_not_greener_uses_the_ci():
    assert A.not_greener(-10.0, 3.0) is False  # -13..-7: clearly lower
    assert A.not_greener(-2.0, 3.0) is True  # -5..+1: not lower within the CI
    assert A.not_greener(5.0, None) is True
    assert A.not_greener(-0.1, None) is False
    assert A.not_greener(None, None) is True


def test_eval_delta_pp_and_perplexity():
    base = {
        "task": "hellaswag",
        "n": 100,
        "acc": 0.40,
        "acc_stderr": 0.03,
        "acc_norm": 0.50,
        "acc_norm_stderr": 0.04,
    }
    var = {
        "task": "hellaswag",
        "n": 100,
        "acc": 0.39,
        "acc_stderr": 0.03,
        "acc_norm": 0.47,
        "acc_norm_stderr": 0.03,
    }
    d = A.eval_delta(var, base)
    assert d["metric"] == "acc_norm"
    assert d["delta_pp"] == pytest.approx(-3.0)
    assert d["stderr_pp"] == pytest.approx(5.0)  # sqrt(4^2 + 3^2)
    p = A.eval_delta(
        {"task": "perplexity", "perplexity": 22.0}, {"task": "perplexity", "perplexity": 20.0}
    )
    assert p["delta_pct"] == pytest.approx(10.0) and p["higher_is_better"] is False


def test_targets_pass_and_fail():
    evals = [{"delta_pp": -0.5}, {"delta_pp": -1.5}]
    t = A.check_targets(
        {"max_accuracy_drop_pp": 1.0, "min_energy_saving": 0.2},
        {"energy_per_token_pct": -25.0},
        evals,
    )
    assert t["max_accuracy_drop_pp"] == {"value": 1.5, "limit": 1.0, "pass": False}
    assert t["min_energy_saving"]["pass"] is True
    assert t["min_energy_saving"]["value"] == pytest.approx(0.25)
    assert A.check_targets({}, {}, evals) == {}


def test_pareto_front():
    pts = [
        ("baseline", 10.0, 0.60),
        ("int8", 6.0, 0.59),
        ("wanda", 7.0, 0.50),
        ("bad", 12.0, 0.55),
        ("missing", None, 0.9),
    ]
    assert A.pareto_front(pts) == ["baseline", "int8"]
    # perplexity: lower is better
    ppl = [("a", 1.0, 30.0), ("b", 2.0, 20.0), ("c", 3.0, 25.0)]
    assert A.pareto_front(ppl, higher_better=False) == ["a", "b"]


def test_payback_is_shown_in_whole_inferences():
    from greenllm.report.tables import payback_text

    assert payback_text(0.21) == "1"  # repaid within the first inference
    assert payback_text(720.0) == "720"
    assert payback_text(1200.4) == "1,201"
    assert payback_text(0.0) == "0" and payback_text(None) == "never"
