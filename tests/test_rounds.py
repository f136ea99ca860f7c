"""Comparisons in rounds: seeded order, pairing, adaptive stopping, three verdicts, disturbance
flags from injected readings (at the lowest boundary: /proc CPU times, sysfs, NVML), shared step
prefixes and their energy accounting, resume mid-round, metered evaluations, the schemes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from greenllm.conditions import ConditionsProbe, clock_throttle_flags, window_flags
from greenllm.report import analysis as A
from greenllm.runner import run
from greenllm.testing import FakeGpu, FakePynvml

# ---------------------------------------------------------------- pure statistics


def _rows(values, start=1):
    return [
        {"round": i, "energy_j": 1.0, "energy_per_token_j": v} for i, v in enumerate(values, start)
    ]


def test_paired_ratios_pair_by_round_and_cancel_common_drift():
    drift = [1.0, 1.6, 0.7, 2.2, 1.1, 0.9]  # the machine's load changes between rounds
    base = _rows([10.0 * d for d in drift])
    var = _rows([8.0 * d for d in drift])  # truly 20 % less, under the same drift
    ratios = A.paired_ratios(base, var, "energy_per_token_j")
    assert ratios == pytest.approx([0.8] * 6)
    d, hw = A.paired_delta(ratios)
    assert d == pytest.approx(-0.2) and hw == pytest.approx(0.0, abs=1e-12)
    # unpaired, the same data gives a CI that swallows the effect
    from greenllm.stats import mean_ci95

    mb, hb = mean_ci95([r["energy_per_token_j"] for r in base])
    mv, hv = mean_ci95([r["energy_per_token_j"] for r in var])
    _, hw_unpaired = A.rel_delta(mv, mb, hv, hb)
    assert hw_unpaired > 0.2


def test_unusable_windows_are_not_paired_and_rounds_must_match():
    base = _rows([10.0, 10.0, 10.0])
    var = _rows([9.0, 9.0, 9.0])
    var[1]["excluded"] = "discarded: contended"
    base[2]["invalid"] = ["meter_vanished:x"]
    assert A.paired_ratios(base, var, "energy_per_token_j", keep=True) == [0.9, None, None]
    assert A.paired_ratios(base, _rows([9.0], start=7), "energy_per_token_j") == []


def test_paired_delta_ci_is_a_student_t_interval():
    d, hw = A.paired_delta([0.9, 1.0, 1.1])
    assert d == pytest.approx(0.0)
    assert hw == pytest.approx(4.303 * 0.1 / 3**0.5)
    assert A.paired_delta([0.9]) == pytest.approx((-0.1, None))  # one round: no CI
    assert A.paired_delta([]) == (None, None)


@pytest.mark.parametrize(
    "delta, hw, target, expected",
    [
        (-20.0, 5.0, None, "greener"),  # saving 15..25 % > 0
        (-20.0, 5.0, 0.1, "greener"),  # > 10 % target
        (-12.0, 5.0, 0.1, "inconclusive"),  # 7..17 % straddles 10 %
        (-5.0, 3.0, 0.1, "not greener"),  # 2..8 % < 10 %
        (1.0, 3.0, None, "inconclusive"),  # no significant difference
        (10.0, 3.0, None, "not greener"),  # costs more
        (-20.0, None, None, "inconclusive"),  # no CI
        (None, None, None, "inconclusive"),
    ],
)
def test_three_verdicts(delta, hw, target, expected):
    assert A.verdict(delta, hw, target) == expected


def test_a_window_far_from_its_median_is_flagged():
    rows = _rows([10.0, 10.1, 9.9, 11.0])
    assert A.outlier_flags(rows, rows[0]) == []
    assert "disagrees: +9.5%" in A.outlier_flags(rows, rows[3])[0]  # median 10.05


# ---------------------------------------------------------------- conditions (lowest boundary)


def _sysfs(root: Path, freqs_khz=(2_000_000, 2_000_000), temps_mc=(45_000,), governor="schedutil"):
    for i, f in enumerate(freqs_khz):
        d = root / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        d.mkdir(parents=True, exist_ok=True)
        (d / "scaling_cur_freq").write_text(f"{f}\n")
        (d / "scaling_governor").write_text(f"{governor}\n")
        (d / "scaling_min_freq").write_text("800000\n")
        (d / "scaling_max_freq").write_text("2000000\n")
    for i, t in enumerate(temps_mc):
        z = root / f"sys/class/thermal/thermal_zone{i}"
        z.mkdir(parents=True, exist_ok=True)
        (z / "temp").write_text(f"{t}\n")
        (z / "type").write_text("cpu-thermal\n")
    return root


class FakeKernel:
    """/proc CPU times of a 2-CPU machine: each window takes 1 s (2 CPU-seconds of capacity);
    this process uses 0.8 of them, other processes ``other`` (1.0 in the loaded windows)."""

    def __init__(self, loaded=()):
        self.loaded = set(loaded)
        self.busy = self.total = self.own = 0.0
        self.calls = 0
        self.window = 0

    def cpu_times(self):
        self.calls += 1
        if self.calls % 2 == 0:  # the stop() of a window: its CPU time has passed
            other = 1.0 if self.window in self.loaded else 0.02
            self.total += 2.0
            self.own += 0.8
            self.busy += 0.8 + other
            self.window += 1
        return self.busy, self.total

    def own_cpu(self):
        return self.own


def test_probe_reads_cpu_share_frequency_and_temperature_from_the_boundary(tmp_path):
    root = _sysfs(tmp_path, freqs_khz=(1_800_000, 2_200_000), temps_mc=(52_500, 61_000))
    k = FakeKernel(loaded={1})
    p = ConditionsProbe(root, cpu_times=k.cpu_times, own_cpu_s=k.own_cpu, cpu_count=2)
    c0 = p.stop(p.start())
    assert c0["own_cpu_share"] == pytest.approx(0.4)
    assert c0["other_cpu_share"] == pytest.approx(0.01)
    assert c0["cpu_freq_mhz"] == pytest.approx(2000.0)
    assert c0["max_temperature_c"] == pytest.approx(61.0)
    assert set(c0["temperatures_c"]) == {"cpu-thermal", "cpu-thermal#2"}
    assert window_flags(c0, 0.10) == []
    c1 = p.stop(p.start())
    assert c1["other_cpu_share"] == pytest.approx(0.5)
    assert window_flags(c1, 0.10) == ["contended: other processes used 50% of the CPU"]


def test_nvml_throttle_reasons_and_clock_drops_flag_a_window_throttled(tmp_path):
    nv = FakePynvml(gpus=[FakeGpu(clock_event_reasons=0x40 | 0x1)])  # HW thermal + idle
    nv.nvmlInit()  # as greenllm.conditions.nvml_module() does
    p = ConditionsProbe(_sysfs(tmp_path), nvml=nv)
    c = p.stop(p.start())
    assert c["gpu"][0]["graphics_clock_mhz"] == 1410.0
    assert window_flags(c, 1.0) == ["throttled: GPU 0 hw_thermal"]
    nv.gpus[0].clock_event_reasons = 0x1  # idle alone is not throttling
    assert window_flags(p.stop(p.start()), 1.0) == []
    conds = [{"cpu_freq_mhz": f} for f in (2000, 2010, 1990, 1700, 2000)]
    flags = clock_throttle_flags(conds)
    assert flags[3] and "cpu_freq_mhz 1700" in flags[3][0] and not any(flags[:3] + flags[4:])


def test_power_settings_record_governor_nvpmodel_and_jetson_clocks(tmp_path):
    root = _sysfs(tmp_path, governor="performance")
    (root / "etc").mkdir()
    (root / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    for i in (0, 1):  # jetson_clocks pins min = max
        (root / f"sys/devices/system/cpu/cpu{i}/cpufreq/scaling_min_freq").write_text("2000000\n")
    calls = []

    def run_cmd(argv):
        calls.append(argv)
        return "NV Power Mode: MODE_15W\n2\n"

    nv = FakePynvml(gpus=[FakeGpu(power_limit_mw=250_000)])
    nv.nvmlInit()
    ps = ConditionsProbe(root, nvml=nv).power_settings(run_cmd=run_cmd)
    assert ps["cpu_governor"] == "performance"
    assert ps["nvpmodel_mode"] == "MODE_15W" and calls == [["nvpmodel", "-q"]]
    assert ps["jetson_clocks"].startswith("on")
    assert ps["gpu_power_limit_w"] == [250.0]


# ---------------------------------------------------------------- through the runner


def _recipe(root: Path, variants=None, **workload) -> Path:
    from test_runner import make_tiny_recipe

    data = make_tiny_recipe(root, variants=variants)
    data["workload"].update(workload)
    data["measure"] = {"hz": 100, "on_disturbance": "flag"}
    path = root / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _set(path: Path, section: str, **kw) -> None:
    data = yaml.safe_load(path.read_text())
    data.setdefault(section, {}).update(kw)
    path.write_text(yaml.safe_dump(data))


def _windows(out: Path):
    con = sqlite3.connect(out / "greenllm.sqlite")
    try:
        return con.execute(
            "SELECT round, variant_key, row_json FROM windows ORDER BY round, rowid"
        ).fetchall()
    finally:
        con.close()


ONE = {"mag20": [{"prune": {"method": "magnitude", "sparsity": 0.2}}]}


def test_rounds_measure_every_variant_once_in_a_seeded_order(tmp_path):
    path = _recipe(tmp_path, repeats=3)
    s = run(path, tmp_path / "out", progress=False)
    assert s.status == "finished" and s.done["windows"] == 9
    rows = _windows(tmp_path / "out")
    orders = {}
    for r, vkey, row in rows:
        orders.setdefault(r, {})[json.loads(row)["order"]] = vkey
    assert sorted(orders) == [1, 2, 3]
    keys = {vkey for _, vkey, _ in rows}
    for by_pos in orders.values():
        assert sorted(by_pos) == [0, 1, 2] and set(by_pos.values()) == keys  # each once
    # the order is the recipe seed's: a fresh run repeats it exactly
    s2 = run(path, tmp_path / "out2", progress=False)
    rows2 = _windows(tmp_path / "out2")
    assert [(r, k, json.loads(x)["order"]) for r, k, x in rows2] == [
        (r, k, json.loads(x)["order"]) for r, k, x in rows
    ]
    assert s2.status == "finished"


def test_adaptive_rounds_stop_at_the_precision_or_at_max_rounds(tmp_path):
    path = _recipe(tmp_path / "a", variants=ONE, repeats="auto", min_rounds=2, precision=10.0)
    run(path, tmp_path / "a" / "out", progress=False)
    doc = json.loads((tmp_path / "a" / "out" / "results.json").read_text())
    wl = doc["variants"][1]["bench"]["workload"]
    assert wl["rounds"] == 2 and wl["stopped"].startswith("precision reached")
    path = _recipe(
        tmp_path / "b", variants=ONE, repeats="auto", min_rounds=2, max_rounds=3, precision=0.001
    )
    run(path, tmp_path / "b" / "out", progress=False)
    doc = json.loads((tmp_path / "b" / "out" / "results.json").read_text())
    wl = doc["variants"][1]["bench"]["workload"]
    assert wl["rounds"] == 3 and wl["stopped"] == "max_rounds (3) reached"


@pytest.mark.parametrize("policy", ["rerun", "discard", "flag"])
def test_disturbed_windows_follow_the_recipe_policy(tmp_path, policy):
    path = _recipe(tmp_path, variants=ONE, repeats=2)
    _set(path, "measure", on_disturbance=policy, max_reruns=2)
    kernel = FakeKernel(loaded={0})  # the very first window saw another process
    probe = ConditionsProbe(
        _sysfs(tmp_path / "sys"), cpu_times=kernel.cpu_times, own_cpu_s=kernel.own_cpu
    )
    s = run(path, tmp_path / "out", progress=False, probe=probe)
    assert s.status == "finished"
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    flagged = sum(v["flagged_windows"] for v in doc["variants"])
    excluded = sum(v["excluded_windows"] for v in doc["variants"])
    reruns = sum(v["rerun_windows"] for v in doc["variants"])
    if policy == "rerun":
        assert (reruns, flagged, excluded) == (1, 0, 0)  # measured again, the rerun is clean
        assert kernel.window == 5
    elif policy == "discard":
        assert (reruns, flagged, excluded) == (0, 1, 1)
        v = doc["variants"][1]
        assert v["deltas"]["rounds_paired"] in (1, 2)  # the discarded round is not paired
    else:
        assert (reruns, flagged, excluded) == (0, 1, 0)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Measurement" in md and "windows flagged" in md


def test_shared_prefix_runs_once_and_is_charged_to_both(tmp_path):
    wanda = {"prune": {"method": "wanda", "sparsity": 0.5, "calibration": {"samples": 4}}}
    variants = {"w": [wanda], "w-int8": [wanda, {"quantize": {"method": "int8_weight"}}]}
    path = _recipe(tmp_path, variants=variants, repeats=1)
    run(path, tmp_path / "out", progress=False)
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    _, w, wi = doc["variants"]
    a, b = w["steps"][0], wi["steps"][0]
    assert b["stats"]["shared_with"] == "w" and "shared_with" not in a["stats"]
    # copied, not recomputed: the very same measurement (duration and energy to the bit)
    assert (a["duration_s"], a["energy_j"]) == (b["duration_s"], b["energy_j"])
    assert wi["compression_energy_j"] == pytest.approx(a["energy_j"] + wi["steps"][1]["energy_j"])
    assert "Shared step prefixes ran once: w-int8 (steps 1-1 shared with w)" in doc["methodology"]
    # the shared model is the same model: both evaluate identically after pruning
    assert wi["evals"][0]["perplexity"] == pytest.approx(w["evals"][0]["perplexity"], rel=0.05)


class _StopAfter(ConditionsProbe):
    """A Ctrl-C in the middle of a round (after ``n`` windows began)."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def start(self):
        self.n -= 1
        if self.n < 0:
            raise KeyboardInterrupt("test")
        return super().start()


def test_resume_mid_round_keeps_finished_rounds_and_remeasures_the_broken_one(tmp_path):
    path = _recipe(tmp_path, variants=ONE, repeats=3)
    with pytest.raises(KeyboardInterrupt):
        run(path, tmp_path / "out", progress=False, probe=_StopAfter(5))  # 2 rounds + 1
    assert len(_windows(tmp_path / "out")) == 5
    s = run(path, tmp_path / "out", progress=False)
    assert s.status == "finished"
    assert s.skipped["windows"] == 4 and s.done["windows"] == 2  # round 3 measured whole
    rounds = [r for r, _, _ in _windows(tmp_path / "out")]
    assert sorted(rounds) == [1, 1, 2, 2, 3, 3]


def test_evaluations_are_metered_and_the_seed_004_table_is_written(tmp_path):
    data_path = _recipe(tmp_path, variants=ONE, repeats=1)
    data = yaml.safe_load(data_path.read_text())
    data["evals"].append({"choice": {"data": "builtin:choice-sample", "task": "jsonl", "limit": 4}})
    data_path.write_text(yaml.safe_dump(data))
    run(data_path, tmp_path / "out", progress=False)
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    for v in doc["variants"]:
        for e in v["evals"]:
            c = e["cost"]
            assert c["energy_j"] > 0 and c["duration_s"] > 0 and c["tokens_processed"] > 0
            assert c["energy_per_item_j"] == pytest.approx(c["energy_j"] / e["n"])
            assert c["energy_per_item_wh"] == pytest.approx(c["energy_per_item_j"] / 3600)
            assert c["run_edp_js"] == pytest.approx(c["energy_j"] * c["duration_s"])
            assert c["edp_js"] == pytest.approx(c["run_edp_js"] / e["n"] ** 2)
            assert c["tokens_per_wh"] == pytest.approx(
                c["tokens_processed"] / (c["energy_j"] / 3600)
            )
            assert c["estimated"] is True and c["boundary"] == "model"
        choice = v["evals"][1]["cost"]
        assert choice["accuracy_per_wh"] == pytest.approx(
            choice["accuracy_pct"] / choice["energy_per_item_wh"]
        )
    out = tmp_path / "out"
    assert (
        "## Evaluations: accuracy, energy and time per inference" in (out / "report.md").read_text()
    )
    assert "tab:greenllm-evals-" in (out / "report.tex").read_text()
    assert (
        "Evaluations: accuracy, energy and time per inference" in (out / "report.html").read_text()
    )


@pytest.mark.parametrize("scheme", ["reload", "bracket"])
def test_reload_and_bracket_schemes(tmp_path, scheme):
    path = _recipe(tmp_path, repeats=2, scheme=scheme)
    s = run(path, tmp_path / "out", progress=False)
    assert s.status == "finished"
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    for v in doc["variants"][1:]:
        assert v["bench"]["workload"]["scheme"] == scheme
        assert v["deltas"]["basis"] == "paired rounds" and v["deltas"]["rounds_paired"] == 2
    if scheme == "reload":
        saved = list((tmp_path / "out" / "artifacts").glob("*/greenllm.json"))
        assert len(saved) == 2  # greenllm checkpoints (safetensors), reloaded each round
        assert s.done["windows"] == 6
    else:  # B V B V B per variant: 3 baseline windows bracket 2 variant windows, twice
        assert s.done["windows"] == 2 * (3 + 2)
        assert doc["variants"][0]["bench"]["repeats"] == 6
    assert f"scheme {scheme}" in doc["methodology"]


def test_no_delta_across_measurement_boundaries():
    from greenllm.report.build import _derive

    base = {
        "name": "baseline",
        "bench": {"device": {"boundary": "gpu board"}, "energy_per_token_j": 1.0},
        "evals": [],
        "compression_energy_j": 0.0,
    }
    var = {
        "name": "v",
        "bench": {"device": {"boundary": "cpu package"}, "energy_per_token_j": 0.5},
        "evals": [],
        "compression_energy_j": 1.0,
    }
    carbon = {"intensity_g_per_kwh": 400.0, "pue": 1.0}
    _derive(base, base, carbon, {})
    _derive(var, base, carbon, {})
    assert "energy_per_token_pct" not in var["deltas"]
    assert "not compared" in var["deltas"]["basis"] and var["verdict"] == "inconclusive"
    assert var["payback_inferences"] is None


def test_a_persistent_disturbance_is_flagged_not_waited_out_window_by_window(tmp_path):
    path = _recipe(tmp_path, variants=ONE, repeats=2)
    _set(path, "measure", on_disturbance="rerun", max_reruns=2)
    kernel = FakeKernel(loaded={0, 1, 2, 3})  # all of round 1 (3 attempts + 1) is loaded
    probe = ConditionsProbe(
        _sysfs(tmp_path / "sys"), cpu_times=kernel.cpu_times, own_cpu_s=kernel.own_cpu
    )
    assert run(path, tmp_path / "out", progress=False, probe=probe).status == "finished"
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sum(v["rerun_windows"] for v in doc["variants"]) == 2  # one window's reruns only
    assert sum(v["flagged_windows"] for v in doc["variants"]) == 2  # both round-1 windows
    assert kernel.window == 6  # 4 in round 1, 2 in round 2 (quiet again: no reruns)
