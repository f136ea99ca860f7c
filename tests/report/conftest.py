"""A results store holding known numbers (no model, no torch), shared by the report tests:
baseline 2.0 J/request; 'int8' 1.5 J/request after a 360 J compression (payback 720); a variant
with a hostile name at 1.98 J/request and a wide CI (not greener)."""

from __future__ import annotations

import pytest

from greenllm.report.build import write_report
from greenllm.results import BenchResult, DomainEnergy, EnergyReport, EvalResult, StepResult
from greenllm.store import Store

EVIL = '<script>alert("x")</script>&\'"'


def _energy(j, dur=10.0):
    d = DomainEnergy(
        meter="rapl",
        domain="package-0",
        energy_j=j,
        mean_power_w=j / dur,
        samples=100,
        method="counter",
    )
    return EnergyReport(
        duration_s=dur,
        energy_j=j,
        mean_power_w=j / dur,
        domains=(d,),
        samples=100,
        sampling_hz=10.0,
        method="counter",
        estimated=False,
        meters=("rapl",),
    )


def _bench(req_j, req_ci, size):
    tok = 32
    m = {
        "energy_per_request_j": req_j,
        "energy_per_token_j": req_j / tok,
        "e2e_latency_s": req_j / 20.0,
        "size_bytes": size,
        "tokens_per_wh": 3600.0 / (req_j / tok),
        "edp_js": req_j * req_j / 20.0,
    }
    ci = {
        "energy_per_request_j": req_ci,
        "energy_per_token_j": req_ci / tok,
        "e2e_latency_s": req_ci / 20.0,
    }
    return BenchResult(
        metrics=m,
        ci95=ci,
        meter="rapl",
        estimated=False,
        repeats=5,
        workload={"prompts": "builtin:prompts", "max_new_tokens": 32},
        energy=_energy(req_j * 4 * 5),
    )


def _acc(acc, se, n=200):
    return EvalResult(
        task="hellaswag",
        n=n,
        metrics={"acc": acc, "acc_stderr": se, "acc_norm": acc, "acc_norm_stderr": se},
        duration_s=3.0,
        settings={"data": "hellaswag_val_full.txt"},
    )


@pytest.fixture
def run_dir(tmp_path):
    """baseline: 2.0 J/request; 'int8': 1.5 J/request, compression 360 J -> payback 720;
    EVIL: 1.98 J/request with a wide CI -> not greener."""
    plan = []
    specs = [
        ("baseline", [], _bench(2.0, 0.02, 1000), _acc(0.50, 0.02), None),
        (
            "int8",
            [{"quantize": {"method": "int8_weight"}}],
            _bench(1.5, 0.02, 500),
            _acc(0.49, 0.02),
            360.0,
        ),
        (
            EVIL,
            [{"prune": {"method": "wanda", "sparsity": 0.5}}],
            _bench(1.98, 0.2, 1000),
            _acc(0.40, 0.02),
            50.0,
        ),
    ]
    with Store(tmp_path) as s:
        for i, (name, steps, *_r) in enumerate(specs):
            plan.append(
                {
                    "name": name,
                    "variant_key": f"v{i}",
                    "eval_keys": [f"e{i}"],
                    "bench_key": f"b{i}",
                    "steps": steps,
                }
            )
        recipe = {
            "name": "known-numbers",
            "model": {"id": "m", "dtype": "float32", "device": "cpu"},
            "workload": {
                "prompts": "builtin:prompts",
                "max_new_tokens": 32,
                "batch_size": 1,
                "warmup": 1,
                "repeats": 5,
                "min_window_s": 0,
            },
            "carbon": {"intensity_g_per_kwh": 360.0, "pue": 1.5},
            "targets": {"max_accuracy_drop_pp": 2.0, "min_energy_saving": 0.2},
        }
        run = s.begin_run("known-numbers", recipe, plan)
        s.set_environment(
            run,
            hardware={"cpu_count": 2, "machine": "x86_64"},
            software={"python": "3.11", "greenllm": "0.1.0"},
            meters={"requested": ["rapl"]},
            sampling_hz=10.0,
            idle_s=0.0,
        )
        for i, (name, steps, bench, ev, comp_j) in enumerate(specs):
            s.ensure_variant(f"v{i}", name, {"steps": steps}, len(steps), run)
            if comp_j is not None:
                ((key, cfg),) = steps[0].items()
                s.add_step(
                    f"v{i}",
                    0,
                    StepResult(
                        step=key,
                        method=cfg["method"],
                        config=cfg,
                        duration_s=5.0,
                        size_bytes_before=1000,
                        size_bytes_after=500,
                        energy=_energy(comp_j),
                    ),
                    run,
                )
            s.add_eval(f"e{i}", f"v{i}", ev, run)
            s.add_bench(f"b{i}", f"v{i}", bench, run)
        s.finish_run(run, "finished")
    write_report(tmp_path)
    return tmp_path


@pytest.fixture
def evil() -> str:
    return EVIL
