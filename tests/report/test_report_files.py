"""Report files from a store holding known numbers (no model, no torch): results.json
contract, payback and not-greener through the whole pipeline, Markdown/LaTeX/CSV/HTML,
escaping of a hostile variant name, plots, and `greenllm report DIR`."""

from __future__ import annotations

import csv
import io
import json

import pytest

from greenllm.cli import main

# run_dir and evil come from tests/report/conftest.py (the known-numbers store)


def test_results_json_contract_and_known_numbers(run_dir, evil):
    doc = json.loads((run_dir / "results.json").read_text())
    names = [v["name"] for v in doc["variants"]]
    assert names == ["baseline", "int8", evil]
    for v in doc["variants"]:
        for key in (
            "name",
            "steps",
            "evals",
            "bench",
            "compression_energy_j",
            "deltas",
            "payback_inferences",
            "not_greener",
        ):
            assert key in v
        assert isinstance(v["evals"], list) and v["evals"][0]["task"] == "hellaswag"
        assert v["evals"][0]["acc"] is not None  # flat `greenllm eval --json` form
        assert v["bench"]["meter"] == "rapl"  # flat `greenllm bench --json` form
        assert "energy_per_token_j_ci95" in v["bench"]
    base, int8, evil = doc["variants"]
    assert base["not_greener"] is False and base["payback_inferences"] is None
    assert int8["compression_energy_j"] == 360.0
    assert int8["payback_inferences"] == pytest.approx(360.0 / (2.0 - 1.5))
    assert int8["not_greener"] is False
    assert int8["deltas"]["energy_per_token_pct"] == pytest.approx(-25.0)
    assert int8["deltas"]["size_pct"] == pytest.approx(-50.0)
    assert int8["deltas"]["evals"][0]["delta_pp"] == pytest.approx(-1.0)
    assert int8["targets"]["max_accuracy_drop_pp"]["pass"] is True
    assert int8["targets"]["min_energy_saving"]["pass"] is True
    assert evil["not_greener"] is True  # -1 % with a ±10 % CI
    assert evil["targets"]["max_accuracy_drop_pp"]["pass"] is False
    # carbon: 1000 requests x 1.5 J = 1500 J = 1500/3.6e6 kWh x 360 g/kWh x PUE 1.5
    assert int8["emissions_g_per_1000_inferences"] == pytest.approx(1500 / 3.6e6 * 360 * 1.5)
    assert int8["compression_emissions_g"] == pytest.approx(360 / 3.6e6 * 360 * 1.5)
    assert doc["pareto"] == ["baseline", "int8"]
    assert "All figures are hardware measurements." in doc["methodology"]
    assert "rapl" in doc["methodology"] and "5 measured repeats" in doc["methodology"]
    assert "with the KV cache, eager" in doc["methodology"]  # the decode mode is named
    assert "repaid after 720 inferences" in doc["carbon_statement"]


def test_markdown_latex_csv(run_dir, evil):
    md = (run_dir / "report.md").read_text()
    assert "| int8 |" in md and "NO: compressed but not greener" in md and "720" in md
    tex = (run_dir / "report.tex").read_text()
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\end{table}"):
        assert cmd in tex
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert "<script>" not in tex and r"\&" in tex and r"\paragraph{Methodology.}" in tex
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    n_cols = tex.split(r"\begin{tabular}{")[1].split("}")[0]
    for row in filter(None, (r.strip() for r in body.split(r"\\"))):
        assert row.count(" & ") == len(n_cols) - 1, row
    rows = list(csv.DictReader(io.StringIO((run_dir / "results.csv").read_text())))
    assert [r["variant"] for r in rows] == ["baseline", "int8", evil]
    assert float(rows[1]["payback_inferences"]) == pytest.approx(720.0)
    assert rows[2]["not_greener"] == "True"
    em = list(csv.DictReader(io.StringIO((run_dir / "emissions.csv").read_text())))
    assert {"timestamp", "project_name", "duration", "emissions", "energy_consumed"} <= set(em[0])
    step_row = next(r for r in em if r["experiment_id"] == "int8/step0:quantize")
    assert float(step_row["energy_consumed"]) == pytest.approx(360 / 3.6e6)
    assert float(step_row["emissions"]) == pytest.approx(360 / 3.6e6 * 360 * 1.5 / 1000)


def test_html_escapes_every_string(run_dir):
    html = (run_dir / "report.html").read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#x27;&quot;" in html
    assert html.count("data:image/png;base64,") == 2
    assert "http://" not in html and "https://" not in html  # self-contained
    for f in ("pareto.png", "pareto.pdf", "energy_per_token.png", "energy_per_token.pdf"):
        data = (run_dir / f).read_bytes()
        assert data[:4] in (b"\x89PNG", b"%PDF")


def test_report_command_rebuilds(run_dir, capsys):
    (run_dir / "report.md").unlink()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.md").exists()
    assert main(["report", str(run_dir / "nothing-here")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no results store" in err


def test_methodology_names_compiled_decoding():
    from greenllm.report.statements import methodology

    doc = {
        "variants": [],
        "workload": {
            "prompts": "builtin:prompts",
            "compile": True,
            "max_new_tokens": 8,
            "batch_size": 1,
            "warmup": 1,
            "repeats": 2,
            "min_window_s": 0,
        },
    }
    text = methodology(doc)
    assert "static KV cache and a torch.compile'd decode step" in text and "eager" not in text


def test_report_files_honour_the_umask(run_dir, tmp_path, umask, tree_modes):
    """Written like any tool's output: 0644 under umask 022, 0600 under 077 (not mkstemp's
    0600 always)."""
    from greenllm.report.build import write_report

    fmode, dmode = umask
    out = tmp_path / "report-out"
    files = write_report(run_dir, out)
    assert len(files) >= 10
    modes = tree_modes(out)
    assert modes.pop(".") == dmode
    assert modes.pop(".greenllm-report.lock") == fmode  # the report writers' lock file
    assert modes == {f.name: fmode for f in files}, {k: oct(v) for k, v in modes.items()}
