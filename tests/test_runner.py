"""The runner end to end on the tiny in-code model: store, report files, results.json
contract, resume that skips finished work, keys that change only what they should, --fresh.
Interrupted runs (SIGINT, kill -9) are in test_kill_resume.py."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from greenllm.recipe import load_recipe
from greenllm.runner import plan, run

REPORT_FILES = (
    "report.md",
    "report.tex",
    "report.html",
    "results.json",
    "results.csv",
    "emissions.csv",
    "pareto.png",
    "pareto.pdf",
    "energy_per_token.png",
    "energy_per_token.pdf",
    "greenllm.sqlite",
)


def make_tiny_recipe(root: Path, variants: dict | None = None, repeats: int = 2) -> dict:
    from greenllm.testing import tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer(0)
    model.save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    (root / "text.txt").write_text("The quick brown fox jumps over the lazy dog. " * 12)
    return {
        "schema_version": 1,
        "name": "tiny-e2e",
        "model": {"id": str(root / "model")},
        "calibration": "text.txt",  # relative: resolved against the recipe's folder
        "variants": variants
        if variants is not None
        else {
            "mag50": [{"prune": {"method": "magnitude", "sparsity": 0.5}}],
            "wanda50-int8": [
                {
                    "prune": {
                        "method": "wanda",
                        "sparsity": 0.5,
                        "calibration": {"samples": 4, "seq_len": 32},
                    }
                },
                {"quantize": {"method": "int8_weight"}},
            ],
        },
        "evals": [{"perplexity": {"data": "text.txt", "max_length": 64}}],
        "workload": {
            "prompts": ["Hello there", "The cat sat"],
            "max_new_tokens": 4,
            "warmup": 0,
            "repeats": repeats,
            "min_window_s": 0,
        },
        "meters": ["estimate"],
        "measure": {"hz": 100, "on_disturbance": "flag"},
        "carbon": {"intensity_g_per_kwh": 400.0},
    }


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    recipe = make_tiny_recipe(root)
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    summary = run(path, root / "out", progress=False)
    return root, path, summary


def _counts(out: Path) -> dict:
    con = sqlite3.connect(out / "greenllm.sqlite")
    try:
        return {
            t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("runs", "variants", "steps", "evals", "benches")
        }
    except sqlite3.OperationalError:  # polled while the schema is being created
        return {t: 0 for t in ("runs", "variants", "steps", "evals", "benches")}
    finally:
        con.close()


def test_end_to_end_writes_every_file(e2e):
    root, _, summary = e2e
    assert summary.status == "finished"
    assert summary.variants == ["baseline", "mag50", "wanda50-int8"]
    assert summary.done == {"steps": 3, "evals": 3, "benches": 3, "windows": 6}
    for f in REPORT_FILES:
        assert (root / "out" / f).stat().st_size > 0, f
    assert _counts(root / "out") == {"runs": 1, "variants": 3, "steps": 3, "evals": 3, "benches": 3}


def test_results_json_contract(e2e):
    root, _, _ = e2e
    doc = json.loads((root / "out" / "results.json").read_text())
    base, mag, wi = doc["variants"]
    assert base["name"] == "baseline" and base["steps"] == []
    for v in doc["variants"]:
        assert {
            "name",
            "steps",
            "evals",
            "bench",
            "compression_energy_j",
            "deltas",
            "payback_inferences",
            "not_greener",
        } <= set(v)
        assert isinstance(v["not_greener"], bool)
        assert v["evals"][0]["task"] == "perplexity" and v["evals"][0]["perplexity"] > 1
        assert v["bench"]["estimated"] is True and v["bench"]["repeats"] == 2
        assert v["bench"]["energy_per_token_j"] > 0
    assert [s["step"] for s in wi["steps"]] == ["prune", "quantize"]
    # the compression's own energy is the sum of its measured steps
    assert wi["compression_energy_j"] == pytest.approx(sum(s["energy_j"] for s in wi["steps"]))
    assert wi["compression_energy_j"] > 0
    assert wi["steps"][1]["size_bytes_after"] < wi["steps"][1]["size_bytes_before"]
    assert wi["deltas"]["size_pct"] < 0  # int8 weights are smaller
    assert mag["steps"][0]["stats"]  # the step's own stats are kept
    assert "ESTIMATES" in doc["methodology"]  # honest about the meter
    env = doc["environment"]
    assert env["software"]["torch"] and env["sampling_hz"] == 100.0
    # rounds: every variant's windows are paired with the baseline's of the same round
    for v in (mag, wi):
        assert v["deltas"]["basis"] == "paired rounds" and v["deltas"]["rounds_paired"] == 2
        assert v["verdict"] in ("greener", "not greener", "inconclusive")
        assert v["boundary"] == "model"
    assert base["bench"]["workload"]["scheme"] == "resident"
    assert "power_settings" in env["hardware"]
    assert "Runtime: torch" in doc["methodology"]  # the runtime every row was measured in
    assert base["bench"]["workload"]["power_settings"] == env["hardware"]["power_settings"]


def test_resume_skips_finished_work(e2e):
    root, path, _ = e2e
    before = (root / "out" / "results.json").read_text()
    summary = run(path, root / "out", progress=False)
    assert summary.done == {"steps": 0, "evals": 0, "benches": 0, "windows": 0}
    assert summary.skipped["variants"] == 3
    counts = _counts(root / "out")
    assert counts["runs"] == 2 and counts["evals"] == 3 and counts["benches"] == 3
    after = json.loads((root / "out" / "results.json").read_text())
    old = json.loads(before)
    assert [v["bench"] for v in after["variants"]] == [v["bench"] for v in old["variants"]]


def test_changed_workload_rebenches_only(tmp_path, e2e):
    root, path, _ = e2e
    data = yaml.safe_load(path.read_text())
    data["workload"]["repeats"] = 3
    r = load_recipe(data | {})
    keys_old = plan(load_recipe(path))
    keys_new = plan(r)
    assert [u.variant_key for u in keys_old] == [u.variant_key for u in keys_new]
    assert [u.eval_keys for u in keys_old] == [u.eval_keys for u in keys_new]
    assert all(a.bench_key != b.bench_key for a, b in zip(keys_old, keys_new))
    # a changed step definition changes the variant key (and so everything below it)
    data["variants"]["mag50"][0]["prune"]["sparsity"] = 0.25
    assert plan(load_recipe(data))[1].variant_key != keys_old[1].variant_key


def test_fresh_starts_over(tmp_path):
    recipe = make_tiny_recipe(tmp_path, variants={}, repeats=1)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    run(tmp_path / "r.yaml", tmp_path / "out", progress=False)
    s = run(tmp_path / "r.yaml", tmp_path / "out", resume=False, progress=False)
    assert s.done == {"steps": 0, "evals": 1, "benches": 1, "windows": 1}
    assert _counts(tmp_path / "out")["runs"] == 1


def test_failing_step_keeps_finished_work_and_names_the_variant(tmp_path):
    from greenllm.errors import GreenLLMError

    recipe = make_tiny_recipe(
        tmp_path, repeats=1, variants={"wanda": [{"prune": {"method": "wanda", "sparsity": 0.5}}]}
    )
    (tmp_path / "empty-cal.txt").write_text("")  # exists (preflight passes), has no text
    recipe["calibration"] = str(tmp_path / "empty-cal.txt")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(GreenLLMError) as info:
        run(tmp_path / "r.yaml", tmp_path / "out", progress=False)
    msg = str(info.value)
    assert msg.startswith("variants.wanda[0] (prune): ") and "\n" not in msg
    counts = _counts(tmp_path / "out")
    # the baseline's evaluation is kept; benches run in rounds once every variant is prepared
    assert counts["evals"] == 1 and counts["benches"] == 0
    con = sqlite3.connect(tmp_path / "out" / "greenllm.sqlite")
    assert con.execute("SELECT status FROM runs").fetchone()[0] == "failed"
    con.close()


def test_training_step_records_energy_per_epoch(tmp_path):
    """A train step run by the runner gets energy and carbon in each epoch record; the step
    itself never imports a meter (the runner passes the hook through StepContext)."""
    recipe = make_tiny_recipe(
        tmp_path,
        variants={"ft": [{"train": {"epochs": 2, "batch_size": 2, "seq_len": 16, "lr": 1e-3}}]},
        repeats=2,
    )
    recipe["evals"] = []
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run(path, tmp_path / "out", progress=False)
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    (ft,) = [v for v in data["variants"] if v["name"] == "ft"]
    con = sqlite3.connect(tmp_path / "out" / "greenllm.sqlite")
    try:
        (raw,) = con.execute("SELECT result_json FROM steps").fetchone()
    finally:
        con.close()
    stats = json.loads(raw)["stats"]
    assert len(stats["epochs"]) == 2
    for rec in stats["epochs"]:
        assert rec["energy_j"] > 0 and rec["energy_estimated"] is True
        assert rec["emissions_g"] == pytest.approx(rec["energy_j"] / 3.6e6 * 400.0)
    assert ft["compression_energy_j"] >= sum(r["energy_j"] for r in stats["epochs"]) * 0.99


class _RecordingMeter:
    """A meter that says whether it is available and records that it was closed."""

    def __init__(self, name: str, closed: list, ok: bool = True, fail: Exception | None = None):
        self.name, self.closed, self.ok, self.fail = name, closed, ok, fail

    def available(self):
        if self.fail is not None:
            raise self.fail
        return self.ok, f"{self.name} {'works' if self.ok else 'is missing'}"

    def close(self) -> None:
        self.closed.append(self.name)


def test_auto_meters_are_stored_as_json_not_an_object_repr(tmp_path):
    from greenllm.store import Store

    recipe = make_tiny_recipe(tmp_path, variants={}, repeats=1)
    recipe["meters"] = "auto"
    recipe["evals"] = []
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    summary = run(path, tmp_path / "out", progress=False)
    assert summary.status == "finished"
    store = Store(tmp_path / "out")
    try:
        meters = store.latest_run()["environment"]["meters"]
    finally:
        store.close()
    assert "object at 0x" not in json.dumps(meters)
    assert meters["requested"] == "auto"
    det = meters["detected"]
    assert (
        isinstance(det, dict) and det["chosen"] and all(isinstance(n, str) for n in det["chosen"])
    )
    rows = {r["meter"]: r for r in det["meters"]}
    assert set(det["chosen"]) <= {n for n, r in rows.items() if r["available"]}
    assert all(r["detail"] for r in rows.values())


def test_collect_environment_closes_every_meter_detection_opened(tmp_path):
    from greenllm.runner import collect_environment

    recipe = load_recipe({**make_tiny_recipe(tmp_path), "meters": "auto"})
    closed: list[str] = []
    env = collect_environment(
        recipe,
        meter_factories={
            "nvml": lambda: _RecordingMeter("nvml", closed, ok=False),
            "rapl": lambda: _RecordingMeter("rapl", closed),
            "estimate": lambda: _RecordingMeter("estimate", closed),
        },
    )
    det = env["meters"]["detected"]
    assert det["chosen"] == ["rapl"] and det["estimated"] is False
    json.dumps(env)
    assert sorted(closed) == ["estimate", "nvml", "rapl"]  # each one exactly once


def test_meters_detection_opened_are_closed_when_detection_fails(tmp_path):
    from greenllm.errors import MeterError
    from greenllm.runner import collect_environment

    recipe = load_recipe({**make_tiny_recipe(tmp_path), "meters": "auto"})
    closed: list[str] = []
    env = collect_environment(
        recipe,
        meter_factories={
            "nvml": lambda: _RecordingMeter("nvml", closed, fail=MeterError("no driver")),
            "rapl": lambda: _RecordingMeter("rapl", closed),
            "jetson": lambda: _RecordingMeter("jetson", closed, fail=RuntimeError("sysfs broke")),
            "estimate": lambda: _RecordingMeter("estimate", closed),
        },
    )
    assert env["meters"]["detect_error"] == "sysfs broke"
    assert sorted(closed) == ["jetson", "nvml", "rapl"]  # estimate was never opened


def test_missing_calibration_fails_before_any_work(tmp_path):
    """A Wanda variant without calibration used to fail after the baseline had run."""
    from greenllm.errors import ConfigError

    recipe = make_tiny_recipe(
        tmp_path,
        repeats=1,
        variants={
            "int8": [{"quantize": {"method": "dynamic_int8"}}],
            "wanda": [{"prune": {"method": "wanda", "sparsity": 0.5}}],
        },
    )
    recipe.pop("calibration")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match=r"variants\.wanda\[0\]\.prune: needs calibration"):
        run(tmp_path / "r.yaml", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing created, nothing measured
