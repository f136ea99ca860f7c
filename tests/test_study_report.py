"""The report of a study across devices and models, and ``greenllm compare``.

Two stores are produced for real (``greenllm.run`` on one tiny recipe into two output
directories, as two machines would) and compared: the cross tables name both devices, every
delta is the one each store's own report gives (against its own baseline), the heatmap and
the scatter are valid PNG/PDF, and compare refuses a different recipe (naming the field), a
cell held twice, and inputs that are not stores. A study store written through the Store API
(plan entries naming model and device, results read from a real run) shows one baseline per
(model, device): a variant's delta is checked by hand against its own device's baseline."""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import re
from pathlib import Path

import pytest
import yaml

from greenllm.cli import main
from greenllm.errors import GreenLLMError
from greenllm.report.build import write_report
from greenllm.report.compare import compare, parse_labels
from greenllm.report.study import cell_label, study_hash
from greenllm.runner import run
from greenllm.store import Store

PNG, PDF = b"\x89PNG\r\n\x1a\n", b"%PDF-"
STUDY_PLOTS = ("study_energy_heatmap", "study_accuracy_energy")


def _recipe(root: Path) -> dict:
    from greenllm.testing import tiny_model_and_tokenizer

    model, tok = tiny_model_and_tokenizer(0)
    model.save_pretrained(root / "tiny")
    tok.save_pretrained(root / "tiny")
    (root / "text.txt").write_text("The quick brown fox jumps over the lazy dog. " * 12)
    return {
        "schema_version": 1,
        "name": "tiny-study",
        "model": {"id": str(root / "tiny")},
        "variants": {"mag50": [{"prune": {"method": "magnitude", "sparsity": 0.5}}]},
        "evals": [
            {"perplexity": {"data": str(root / "text.txt"), "max_length": 64}},
            {"choice": {"data": "builtin:choice-sample", "task": "jsonl", "limit": 4}},
        ],
        "workload": {
            "prompts": ["Hello there", "The cat sat"],
            "max_new_tokens": 4,
            "warmup": 0,
            "repeats": 2,
            "min_window_s": 0,
        },
        "meters": ["estimate"],
        "measure": {"hz": 100, "on_disturbance": "flag"},
        "carbon": {"intensity_g_per_kwh": 400.0},
    }


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """One recipe run into two output directories ("two machines"), each its own store."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("study")
    data = _recipe(root)
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    for name in ("orin", "nano"):
        assert run(path, root / name, progress=False).status == "finished"
    return root, data


def _doc(d: Path) -> dict:
    return json.loads((d / "results.json").read_text())


def _cell(doc: dict, variant: str, device: str) -> dict:
    (v,) = [v for v in doc["variants"] if v["variant"] == variant and v["device"] == device]
    return v


def test_compare_builds_the_cross_report(stores, tmp_path):
    root, _ = stores
    out = tmp_path / "cmp"
    labels = parse_labels([f"{root / 'orin'}=orin", f"{root / 'nano'}=nano"])
    files = compare([root / "orin", root / "nano"], out, labels)
    names = {p.name for p in files}
    assert {"results.json", "report.md", "report.tex", "report.html", "study.csv"} <= names
    assert "compare.json" in names
    doc = _doc(out)
    st = doc["study"]
    assert [d["name"] for d in st["devices"]] == ["orin", "nano"]
    assert [m["name"] for m in st["models"]] == ["tiny"] and st["cells"] == 4
    assert st["variants"] == ["baseline", "mag50"]
    assert {v["name"] for v in doc["variants"]} == {
        cell_label(n, "tiny", d) for n in ("baseline", "mag50") for d in ("orin", "nano")
    }
    # each device's variant is derived against that device's baseline: the numbers are the
    # ones each store's own (plain) report gives
    for dev in ("orin", "nano"):
        own = _doc(root / dev)["variants"][1]
        v = _cell(doc, "mag50", dev)
        assert v["model"] == "tiny" and v["definition"] == own["definition"]
        for k in ("energy_per_token_pct", "energy_per_token_pct_ci95", "size_pct"):
            assert v["deltas"][k] == pytest.approx(own["deltas"][k]), (dev, k)
        assert v["verdict"] == own["verdict"]
        assert v["deltas"]["evals"][0]["delta_pct"] == pytest.approx(
            own["deltas"]["evals"][0]["delta_pct"]
        )
        assert v["cross"]["energy_per_token_j"] == own["bench"]["energy_per_token_j"]
        assert _cell(doc, "baseline", dev)["deltas"]["evals"] == []
    # per device: time and utilisation (the estimate meter reads no GPU)
    usage = {u["device"]: u for u in st["usage"]}
    for dev in ("orin", "nano"):
        u = usage[dev]
        assert u["cells"] == 2 and u["bench_s"] > 0 and u["eval_s"] > 0
        assert u["total_s"] == pytest.approx(u["compression_s"] + u["eval_s"] + u["bench_s"])
        assert 0 < u["own_cpu_util_pct"] <= u["cpu_util_pct"] <= 100.0 + 1e-6
        assert u["gpu_util_pct"] is None
    md = (out / "report.md").read_text()
    assert "## Across devices and models" in md and "Study: models tiny x devices orin, nano" in md
    assert "| orin | tiny | mag50 |" in md and "| nano | tiny | baseline |" in md
    assert "| model | variant | orin | nano |" in md  # energy per token side by side
    assert "not recorded" in md  # GPU utilisation
    assert md.count("| tiny | mag50 |") >= 2  # the pivots
    tex = (out / "report.tex").read_text()
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 6
    assert r"\label{tab:greenllm-study-cells-tiny-study}" in tex and "mag50 $\\cdot$ tiny" in tex
    html_text = (out / "report.html").read_text()
    assert 'id="study-devices"' in html_text and "mag50 · tiny @ nano" in html_text
    rows = list(csv.DictReader(io.StringIO((out / "study.csv").read_text())))
    assert [(r["device"], r["variant"]) for r in rows] == [
        ("orin", "baseline"),
        ("orin", "mag50"),
        ("nano", "baseline"),
        ("nano", "mag50"),
    ]
    assert float(rows[1]["energy_per_token_j"]) == pytest.approx(
        _cell(doc, "mag50", "orin")["cross"]["energy_per_token_j"]
    )
    assert rows[0]["quality_metric"] == doc["quality_metric"]
    for stem in STUDY_PLOTS:
        assert (out / f"{stem}.png").read_bytes().startswith(PNG)
        assert (out / f"{stem}.pdf").read_bytes().startswith(PDF)
    listing = json.loads((out / "compare.json").read_text())
    orin_run = _doc(root / "orin")["run"]["id"]
    assert [i["path"] for i in listing["inputs"]] == [str(root / "orin"), str(root / "nano")]
    assert listing["inputs"][0]["run_id"] == orin_run
    with Store(root / "orin", create=False) as s:
        assert listing["study_hash"] == study_hash(s.latest_run()["recipe"])
    assert {i["study_hash"] for i in listing["inputs"]} == {listing["study_hash"]}


def test_cli_compare_refuses_a_cell_held_twice(stores, tmp_path, capsys):
    root, _ = stores
    a, b = str(root / "orin"), str(root / "nano")
    # both ran on this machine: the same detected device profile, so the same cells
    assert main(["compare", a, b, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    # the device label is the profile detected here (cpu, or nvidia-gpu where NVML answers)
    assert re.search(r"'baseline · tiny @ [^']+'", err) and "--label" in err
    assert not (tmp_path / "x" / "results.json").exists()
    rc = main(
        [
            "compare",
            a,
            b,
            "--out",
            str(tmp_path / "y"),
            "--label",
            f"{a}=one",
            "--label",
            f"{b}=two",
        ]
    )
    assert rc == 0 and "wrote" in capsys.readouterr().out
    assert [d["name"] for d in _doc(tmp_path / "y")["study"]["devices"]] == ["one", "two"]


def test_compare_refuses_a_different_recipe(stores, tmp_path, capsys):
    import torch

    torch.set_num_threads(1)
    root, data = stores
    other = copy.deepcopy(data)
    other["evals"][1]["choice"]["limit"] = 3  # one eval changed
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(other))
    assert run(path, tmp_path / "other", progress=False).status == "finished"
    labels = parse_labels([f"{root / 'orin'}=orin", f"{tmp_path / 'other'}=other"])
    with pytest.raises(GreenLLMError) as exc:
        compare([root / "orin", tmp_path / "other"], tmp_path / "cmp", labels)
    msg = str(exc.value)
    assert "different recipe" in msg and "field(s) evals differ" in msg
    assert not (tmp_path / "cmp" / "results.json").exists()
    rc = main(
        ["compare", str(root / "orin"), str(tmp_path / "other"), "--out", str(tmp_path / "c")]
    )
    assert rc == 2 and "evals" in capsys.readouterr().err


def test_compare_input_errors(stores, tmp_path, capsys):
    root, _ = stores
    orin = root / "orin"
    (tmp_path / "empty").mkdir()
    cases = [
        ([tmp_path / "missing"], "no such directory"),
        ([tmp_path / "empty"], "not a greenllm output directory"),
        ([orin, orin], "given twice"),
    ]
    for dirs, text in cases:
        with pytest.raises(GreenLLMError, match=text):
            compare(dirs, tmp_path / "out")
    with pytest.raises(GreenLLMError, match="one of the inputs"):
        compare([orin], orin)
    with pytest.raises(GreenLLMError, match="not one of the compared"):
        compare([orin], tmp_path / "out", parse_labels([f"{tmp_path}=x"]))
    with pytest.raises(GreenLLMError, match="DIR=NAME"):
        parse_labels(["orin"])
    assert main(["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_a_plain_store_still_gets_the_plain_report(stores, tmp_path):
    root, _ = stores
    write_report(root / "orin", tmp_path / "r")
    doc = _doc(tmp_path / "r")
    assert "study" not in doc and [v["name"] for v in doc["variants"]] == ["baseline", "mag50"]
    assert all("variant" not in v and "device" not in v for v in doc["variants"])
    assert not (tmp_path / "r" / "study.csv").exists()
    assert not any((tmp_path / "r" / f"{s}.png").exists() for s in STUDY_PLOTS)


# ---------------------------------------------------------------- a study store, by hand

# energy per token per device and variant, relative to the real baseline's figure
SCALE = {
    ("jet", "baseline"): 1.0,
    ("jet", "mag50"): 0.5,
    ("pi", "baseline"): 2.0,
    ("pi", "mag50"): 1.6,
}
PER_TOKEN = ("energy_per_token_j", "energy_per_request_j", "edp_js")


def _scaled(bench, factor: float, gpu: float | None):
    """The real bench with its energies scaled and no round pairing (unpaired deltas, from
    the means: checkable by hand); every window read ``gpu`` % GPU utilisation."""
    metrics = dict(bench.metrics)
    for k in PER_TOKEN:
        metrics[k] = bench.metrics[k] * factor
    ci = {k: 0.001 * metrics[k] for k in PER_TOKEN}
    rows = []
    for i, r in enumerate(bench.per_repeat):
        r = {k: x for k, x in r.items() if k != "paired"}
        r["energy_per_token_j"] = metrics["energy_per_token_j"]
        r["gpu_util_mean_pct"] = None if gpu is None else gpu + 20.0 * i
        rows.append(r)
    return dataclasses.replace(bench, metrics=metrics, ci95=ci, per_repeat=tuple(rows))


def test_a_study_store_derives_every_variant_against_its_own_device(stores, tmp_path):
    root, _ = stores
    with Store(root / "orin", create=False) as s:
        real = s.latest_run()
        base_e, var_e = real["plan"]
        benches = {e["name"]: s.get_bench(e["bench_key"]) for e in real["plan"]}
        evals = {e["name"]: [s.get_eval(k) for k in e["eval_keys"]] for e in real["plan"]}
        steps = s.steps(var_e["variant_key"])
        env = real["environment"]
    recipe = {k: x for k, x in real["recipe"].items() if k != "model"}
    recipe["models"] = [{"name": n, **real["recipe"]["model"]} for n in ("tiny", "tiny2")]
    recipe["devices"] = [
        {"name": "jet", "profile": "jetson-orin-nano-8gb", "via": "ray:orin", "torch_device": None},
        {"name": "pi", "profile": "raspberry-pi-5", "via": "local", "torch_device": None},
    ]
    plan = []
    for model in ("tiny", "tiny2"):
        for dev in ("jet", "pi"):
            for entry in (base_e, var_e):  # each group starts with its own baseline
                cell = f"{model}-{entry['name']}-{dev}"
                plan.append(
                    {
                        **entry,
                        "model": model,
                        "device": dev,
                        "variant_key": f"{model}-{entry['name']}",  # compressed once
                        "eval_keys": [f"{cell}-e{i}" for i in range(len(entry["eval_keys"]))],
                        "bench_key": f"{cell}-b",
                    }
                )
    out = tmp_path / "study"
    with Store(out) as s:
        rid = s.begin_run("tiny-study", recipe, plan)
        s.set_environment(rid, **env)
        jet_hw = {
            **env["hardware"],
            "device": {"profile": "jetson-orin-nano-8gb", "title": "NVIDIA Jetson Orin Nano 8GB"},
            "memory_bytes": 8 * 1024**3,
            "jetson_release": "# R36 (release), REVISION: 4.3",
        }
        s.set_device_environment(
            rid, "jet", {**env, "hardware": jet_hw, "node": {"hostname": "orin-1"}}
        )  # pi has none: it falls back to the run's environment
        for e in plan:
            name = e["name"]
            s.ensure_variant(e["variant_key"], name, {"steps": e["steps"]}, len(e["steps"]), rid)
            if name == "mag50":
                for i, st in enumerate(steps):
                    s.add_step(e["variant_key"], i, st, rid)
            for k, ev in zip(e["eval_keys"], evals[name]):
                s.add_eval(k, e["variant_key"], ev, rid)
            gpu = 40.0 if e["device"] == "jet" else None
            # every cell from the baseline's figures, scaled: the ratios are exact
            bench = _scaled(benches["baseline"], SCALE[(e["device"], name)], gpu)
            s.add_bench(e["bench_key"], e["variant_key"], bench, rid)
        s.finish_run(rid, "finished")
    write_report(out)
    doc = _doc(out)
    assert doc["study"]["cells"] == 8 and len(doc["study"]["groups"]) == 4
    by = {(v["model"], v["variant"], v["device"]): v for v in doc["variants"]}
    b0 = benches["baseline"].metrics
    comp_j = sum(st.energy.energy_j for st in steps)
    for model in ("tiny", "tiny2"):
        # by hand: jet 0.5 / 1.0 - 1 = -50 %; pi 1.6 / 2.0 - 1 = -20 % (against jet's
        # baseline it would be +60 %)
        jet, pi = by[(model, "mag50", "jet")], by[(model, "mag50", "pi")]
        assert jet["deltas"]["energy_per_token_pct"] == pytest.approx(-50.0)
        assert pi["deltas"]["energy_per_token_pct"] == pytest.approx(-20.0)
        assert jet["verdict"] == pi["verdict"] == "greener"
        req = b0["energy_per_request_j"]
        assert pi["payback_inferences"] == pytest.approx(comp_j / (2.0 * req - 1.6 * req))
        assert jet["payback_inferences"] == pytest.approx(comp_j / (1.0 * req - 0.5 * req))
        assert pi["deltas"]["evals"][1]["delta_pp"] == pytest.approx(
            (evals["mag50"][1].metrics["acc"] - evals["baseline"][1].metrics["acc"]) * 100
        )
        assert pi["name"] == f"mag50 · {model} @ pi"
        assert by[(model, "baseline", "pi")]["verdict"] is None
    # one front per device: pi's mag50 is on its own although jet's uses less energy
    assert doc["pareto"] == [
        cell_label("mag50", m, d) for m in ("tiny", "tiny2") for d in ("jet", "pi")
    ]
    devs = {d["name"]: d for d in doc["study"]["devices"]}
    assert devs["jet"]["title"] == "NVIDIA Jetson Orin Nano 8GB"
    assert (
        devs["jet"]["memory_bytes"] == 8 * 1024**3 and devs["jet"]["node"]["hostname"] == "orin-1"
    )
    assert devs["pi"]["title"].startswith("Raspberry Pi 5")
    assert devs["pi"]["hardware"]["cpu_count"] == env["hardware"]["cpu_count"]  # the fallback
    usage = {u["device"]: u for u in doc["study"]["usage"]}
    assert usage["jet"]["gpu_util_pct"] == pytest.approx(50.0)  # windows at 40 % and 60 %
    assert usage["pi"]["gpu_util_pct"] is None
    # jet is reached through Ray and compress_on is local: its compression ran elsewhere
    assert usage["jet"]["compression_s"] is None and usage["jet"]["compressed_on"] == "local"
    one = sum(st.duration_s for st in steps)
    assert usage["pi"]["compression_s"] == pytest.approx(2 * one)  # tiny and tiny2, once each
    meth = doc["methodology"]
    assert "Device jet: profile jetson-orin-nano-8gb (NVIDIA Jetson Orin Nano 8GB; 8 GiB" in meth
    assert (
        "on node orin-1" in meth and "R36" in meth and "Device pi: profile raspberry-pi-5" in meth
    )
    assert "Models: tiny = " in meth and "; tiny2 = " in meth
    md = (out / "report.md").read_text()
    assert "| jet | NVIDIA Jetson Orin Nano 8GB | 8.00 | 4 | — (on local) |" in md
    assert "| tiny2 | mag50 |" in md
    lc = doc["lifecycle"]["devices"]
    assert set(lc) == {"jet", "pi"}  # each device's own embodied carbon
    assert lc["jet"]["embodied"] != lc["pi"]["embodied"]
    for stem in STUDY_PLOTS:
        assert (out / f"{stem}.png").read_bytes().startswith(PNG)
        assert (out / f"{stem}.pdf").read_bytes().startswith(PDF)
