"""Every script in examples/ runs, on the tiny in-code model (and the estimate meter)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_example_has_a_test():
    tested = {"measure_generation", "compress_and_compare", "study_on_ray"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


def test_measure_generation(tiny_dir, capsys):
    out = _load("measure_generation").main(
        ["--model", tiny_dir, "--tokens", "6", "--meters", "estimate"]
    )
    assert out["new_tokens"] == 6
    assert out["energy_j"] > 0 and out["estimated"] is True
    assert "J/token" in capsys.readouterr().out


def test_compress_and_compare(tiny_dir, capsys):
    rows = _load("compress_and_compare").main(
        ["--model", tiny_dir, "--tokens", "4", "--repeats", "2", "--meters", "estimate"]
    )
    by = {r["variant"]: r for r in rows}
    assert set(by) == {"baseline", "int8_weight", "wanda50"}
    assert all(math.isfinite(r["perplexity"]) for r in rows)
    # int8 weights are stored in a quarter of the float32 bytes (plus scales)
    assert by["int8_weight"]["size_bytes"] < 0.5 * by["baseline"]["size_bytes"]
    assert "ESTIMATE" in capsys.readouterr().out


def test_study_on_ray_smollm2_and_a_tiny_model_on_two_nodes(smollm2_dir, tmp_path, capsys):
    """The issue's study: 2 models (SmolLM2-135M and a tiny one) x (baseline + 2 variants) x
    2 devices on a real local two-node Ray cluster, one cross report."""
    import pytest

    pytest.importorskip("ray", reason="the ray extra is not installed")
    res = _load("study_on_ray").main(
        ["--models", "smollm2,tiny", "--out", str(tmp_path), "--tokens", "2", "--repeats", "2"]
    )
    assert res["status"] == "finished"
    cells = res["cells"]
    assert len(cells) == 12 and all(c["complete"] == "True" for c in cells)
    assert {(c["model"], c["device"]) for c in cells} == {
        (m, d) for m in ("smollm2", "tiny1") for d in ("node-a", "node-b")
    }
    # int8 on SmolLM2 halves nothing about perplexity's scale: a real model, really scored
    ppl = {(c["model"], c["variant"], c["device"]): float(c["quality"]) for c in cells}
    assert 5 < ppl["smollm2", "baseline", "node-a"] < 200
    assert ppl["smollm2", "baseline", "node-a"] == ppl["smollm2", "baseline", "node-b"]
    assert (tmp_path / "study_energy_heatmap.png").stat().st_size > 1000
    assert "Device x model x variant" in capsys.readouterr().out
