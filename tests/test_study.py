"""Studies: models x variants x devices. Parsing, planning (keys), a local study, the flags,
the worker-side store, and a real two-node Ray cluster (ray.cluster_utils.Cluster on
127.0.0.1) with a node removed mid-run and added back."""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from greenllm.errors import ConfigError, MissingDependencyError
from greenllm.recipe import digest, load_recipe
from greenllm.runner import plan, run
from greenllm.store import Store

CARBON = {"carbon": {"intensity_g_per_kwh": 400.0}}
MAG = {"mag50": [{"prune": {"method": "magnitude", "sparsity": 0.5}}]}


def _base(**kw):
    return {"schema_version": 1, "name": "s", **CARBON, **kw}


# ---------------------------------------------------------------- recipe


def test_models_and_devices_parse_round_trip_and_name_the_field():
    r = load_recipe(
        _base(
            models=[{"name": "a", "id": "org/a"}, {"id": "org/b-model"}],
            devices=[
                {"name": "orin", "profile": "jetson-orin-nano-8gb", "via": "ray:orin"},
                {"name": "here", "profile": "cpu", "torch_device": "cpu", "memory_gib": 4},
            ],
        )
    )
    assert r.is_study and [n for n, _ in r.model_list()] == ["a", "b-model"]
    assert r.model.id == "org/a"  # `model` is the first of `models`
    assert r.devices[0].ray_label == "orin" and r.devices[1].ray_label is None
    d = r.to_dict()
    assert "model" not in d and d["models"][1]["name"] == "b-model"
    assert load_recipe(d).to_dict() == d
    bad = [
        ({"models": []}, "models: expected a non-empty list"),
        ({"devices": [{"name": "x", "profile": "orin-nano"}]}, "devices[0].profile: unknown"),
        (
            {"devices": [{"name": "x", "profile": "cpu"}, {"name": "x", "profile": "cpu"}]},
            "devices[1].name: duplicate device name 'x' (also devices[0])",
        ),
        ({"devices": [{"name": "x", "profile": "cpu", "via": "ssh:x"}]}, "devices[0].via:"),
        (
            {"devices": [{"name": "x", "profile": "cpu", "via": "ray:greenllm_meter"}]},
            "greenllm's own per-node meter resource",
        ),
        ({"devices": [{"name": "x", "profile": "cpu", "colour": 1}]}, "devices[0].colour"),
        ({"compress_on": "orin"}, "compress_on: 'orin' is not a device"),
        ({"devices": {"x": {"profile": "cpu"}}}, "devices: expected a non-empty list"),
    ]
    for extra, msg in bad:
        data = _base(**({} if "models" in extra else {"model": "org/a"}), **extra)
        with pytest.raises(ConfigError) as ei:
            load_recipe(data)
        assert msg in str(ei.value), (extra, str(ei.value))
    with pytest.raises(ConfigError, match="duplicate model name 'a'"):
        load_recipe(_base(models=[{"name": "a", "id": "x/a"}, {"name": "a", "id": "y/a"}]))
    with pytest.raises(ConfigError, match="either 'model'.*or 'models'"):
        load_recipe(_base(model="x/a", models=[{"id": "x/a"}]))


def test_a_plain_recipe_keeps_its_dict_and_its_store_keys():
    r = load_recipe(_base(model="org/a", variants=MAG, evals=[{"perplexity": {}}]))
    assert not r.is_study
    assert not {"models", "devices", "compress_on"} & set(r.to_dict())
    units = plan(r)
    assert [u.model for u in units] == [None, None]
    # the eval key of a plain recipe has no device in it (stores made before studies resume)
    from greenllm.config import to_dict

    key, cfg = r.evals[0]
    assert units[1].eval_keys[0] == digest(
        {"variant": units[1].variant_key, "eval": {key: to_dict(cfg)}}
    )
    assert "model" not in units[0].plan_entry()


def test_a_study_plans_groups_with_device_keys_and_shared_variant_keys():
    r = load_recipe(
        _base(
            models=[{"name": "a", "id": "org/a"}, {"name": "b", "id": "org/b"}],
            devices=[{"name": "d1", "profile": "cpu"}, {"name": "d2", "profile": "raspberry-pi-5"}],
            variants=MAG,
            evals=[{"perplexity": {}}],
        )
    )
    units = plan(r)
    cells = [(u.model, u.device, u.name) for u in units]
    assert cells == [(m, d, v) for m in "ab" for d in ("d1", "d2") for v in ("baseline", "mag50")]
    by = {(u.model, u.device, u.name): u for u in units}
    # compressed once: the variant key is the same on both devices, per model different
    assert by["a", "d1", "mag50"].variant_key == by["a", "d2", "mag50"].variant_key
    assert by["a", "d1", "mag50"].variant_key != by["b", "d1", "mag50"].variant_key
    # measured per device: eval, bench and comparison keys differ
    for k in ("bench_key", "comparison_key"):
        assert getattr(by["a", "d1", "mag50"], k) != getattr(by["a", "d2", "mag50"], k)
    assert by["a", "d1", "mag50"].eval_keys != by["a", "d2", "mag50"].eval_keys
    assert len({u.bench_key for u in units}) == len(units)
    e = by["b", "d2", "mag50"].plan_entry()
    assert (e["model"], e["device"], e["name"]) == ("b", "d2", "mag50")


# ---------------------------------------------------------------- a local study


def _study(root: Path, devices, repeats=2, **workload) -> Path:
    from test_runner import make_tiny_recipe

    from greenllm.testing import tiny_model_and_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    data = make_tiny_recipe(root, variants=MAG, repeats=repeats)
    m, t = tiny_model_and_tokenizer(1)
    m.save_pretrained(root / "model2")
    t.save_pretrained(root / "model2")
    del data["model"]
    data["models"] = [
        {"name": "tiny0", "id": str(root / "model")},
        {"name": "tiny1", "id": str(root / "model2")},
    ]
    data["devices"] = devices
    data["workload"].update(workload)
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


LOCAL2 = [{"name": "dev-a", "profile": "cpu"}, {"name": "dev-b", "profile": "raspberry-pi-5"}]


@pytest.fixture(scope="module")
def local_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    path = _study(root, LOCAL2)
    s = run(path, root / "out", progress=False)
    return root, path, s


def test_a_local_study_measures_every_cell_and_compresses_once(local_study):
    root, _, s = local_study
    assert s.status == "finished"
    with Store(root / "out", create=False) as st:
        c = st.counts()
        plan_ = st.latest_run()["plan"]
        envs = st.device_environments(s.run_id)
    assert c["steps"] == 2  # one magnitude step per model, not per device
    assert c["benches"] == 8 and c["evals"] == 8  # 2 models x 2 devices x 2 variants
    assert c["windows"] == 16  # 2 rounds x 8 cells
    assert sorted(envs) == ["dev-a", "dev-b"]
    assert envs["dev-b"]["device"]["profile"] == "raspberry-pi-5"
    assert all(e.get("node", {}).get("hostname") for e in envs.values())
    # the compressed models are the artifacts every device measured
    arts = {p.name for p in (root / "out" / "artifacts").iterdir()}
    mags = {e["variant_key"] for e in plan_ if e["name"] == "mag50"}
    assert len(mags) == 2 and mags <= arts


def test_a_finished_study_resumes_without_measuring_again(local_study):
    root, path, _ = local_study
    s2 = run(path, root / "out", progress=False)
    assert s2.status == "finished"
    assert s2.done == {"steps": 0, "evals": 0, "benches": 0, "windows": 0}


def test_a_cell_that_does_not_fit_is_skipped_and_the_rest_runs(tmp_path):
    devices = [
        {"name": "dev-a", "profile": "cpu"},
        {"name": "small", "profile": "raspberry-pi-5", "memory_gib": 0.01},
    ]
    path = _study(tmp_path, devices)
    data = yaml.safe_load(path.read_text())
    data["models"] = data["models"][:1]
    path.write_text(yaml.safe_dump(data))
    # validate prints the estimate of every cell before anything runs
    from typer.testing import CliRunner

    from greenllm.cli import app

    res = CliRunner().invoke(app, ["validate", str(path)])
    assert res.exit_code == 0, res.output
    assert "tiny0 / baseline @ small: ~" in res.output
    assert "does not fit: needs ~" in res.output and "small has 0.01 GiB" in res.output
    assert "tiny0 / mag50 @ dev-a:" in res.output and ": fits" in res.output
    s = run(path, tmp_path / "out", progress=False)
    assert s.status == "finished"
    with Store(tmp_path / "out", create=False) as st:
        entries = st.latest_run()["plan"]
        assert st.counts()["benches"] == 2  # dev-a's two cells only
    skipped = {e["name"]: e.get("skip", "") for e in entries if e["device"] == "small"}
    assert skipped["baseline"].startswith("does not fit: needs ~")
    assert skipped["mag50"].startswith("does not fit")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "baseline (not run: does not fit: needs ~" in md


def test_only_device_runs_that_device_here(tmp_path):
    remote = [
        {"name": "dev-a", "profile": "cpu", "via": "ray:dev-a"},
        {"name": "dev-b", "profile": "raspberry-pi-5", "via": "ray:dev-b"},
    ]
    path = _study(tmp_path, remote)
    with pytest.raises(ConfigError, match="reached through Ray: run with --cluster"):
        run(path, tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="--only-device: 'dev-c' is not a device"):
        run(path, tmp_path / "out", progress=False, only_device="dev-c")
    s = run(path, tmp_path / "out", progress=False, only_device="dev-b")
    with Store(tmp_path / "out", create=False) as st:
        assert sorted(st.device_environments(s.run_id)) == ["dev-b"]
        assert st.counts()["benches"] == 4  # dev-b's 2 models x 2 variants only


def test_cluster_flag_needs_devices_and_a_ray_address(tmp_path):
    from test_runner import make_tiny_recipe

    data = make_tiny_recipe(tmp_path, variants={})
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="--cluster: this recipe names no devices"):
        run(tmp_path / "r.yaml", tmp_path / "out", progress=False, cluster="ray")
    path = _study(tmp_path / "s", LOCAL2)
    with pytest.raises(ConfigError, match="not a cluster address"):
        run(path, tmp_path / "out2", progress=False, cluster="tcp://x")


def test_a_missing_ray_is_a_clear_dependency_error(monkeypatch):
    from greenllm.cluster import RayCluster

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingDependencyError, match="ray"):
        RayCluster("ray")


# ---------------------------------------------------------------- the worker-side store


def test_recording_store_reads_its_writes_and_never_emits_twice(local_study):
    from greenllm.store_proxy import RecordingStore, apply_record, snapshot

    root, _, s = local_study
    with Store(root / "out", create=False) as st:
        units = [u for u in plan(load_recipe(root / "study.yaml")) if u.model == "tiny0"][:2]
        snap = snapshot(st, units, s.run_id, "dev-a", [units[0].comparison_key])
    assert len(snap["windows"][units[0].comparison_key]) == 4
    sent = []
    rs = RecordingStore(snap, sent.append)
    ev = rs.get_eval(units[1].eval_keys[0])
    assert ev is not None
    assert rs.add_eval(units[1].eval_keys[0], units[1].variant_key, ev, 1) is False
    row = {"energy_j": 1.0}
    assert rs.add_window("ck", 1, "v", 0, row, 1) is True
    assert rs.add_window("ck", 1, "v", 0, row, 1) is False
    assert [w["round"] for w in rs.windows("ck")] == [1]
    assert rs.drop_round("ck", 1) == 1 and rs.windows("ck") == []
    assert [k for k, _ in sent] == ["add_window", "drop_round"]
    # the driver applies records idempotently
    fresh = Store(root / "applied")
    try:
        run_id = fresh.begin_run("x", {}, [])
        fresh.ensure_variant("v", "v", {}, 0, run_id)
        assert apply_record(fresh, run_id, sent[0]) is True
        assert apply_record(fresh, run_id, sent[0]) is False
        with pytest.raises(Exception, match="does not know"):
            apply_record(fresh, run_id, ("teleport", {}))
    finally:
        fresh.close()


# ---------------------------------------------------------------- a real Ray cluster


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes = {
        "dev-a": c.add_node(num_cpus=1, resources={"dev-a": 1, "greenllm_meter": 1}),
        "dev-b": c.add_node(num_cpus=1, resources={"dev-b": 1, "greenllm_meter": 1}),
    }
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()


RAY2 = [
    {"name": "dev-a", "profile": "cpu", "via": "ray:dev-a"},
    {"name": "dev-b", "profile": "raspberry-pi-5", "via": "ray:dev-b"},
]


def _bench_keys_done(store_file: Path) -> int:
    con = sqlite3.connect(f"file:{store_file}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute("SELECT COUNT(*) FROM benches").fetchone()[0])
    finally:
        con.close()


def test_cells_run_on_the_nodes_with_their_resource_and_survive_a_lost_node(tmp_path, ray_cluster):
    c, nodes = ray_cluster
    path = _study(tmp_path, RAY2, repeats=4, min_window_s=0.3)
    out = tmp_path / "out"
    store_file = out / "greenllm.sqlite"
    events: list[str] = []

    def dev_b_windows() -> int:
        con = sqlite3.connect(f"file:{store_file}?mode=ro", uri=True, timeout=5)
        try:
            return int(
                con.execute(
                    "SELECT COUNT(*) FROM windows w JOIN runs r ON w.run_id = r.id "
                    "WHERE w.comparison_key IN (SELECT value FROM json_each(?))",
                    (json_keys,),
                ).fetchone()[0]
            )
        finally:
            con.close()

    import json

    units = plan(load_recipe(path))
    json_keys = json.dumps(sorted({u.comparison_key for u in units if u.device == "dev-b"}))

    result: dict = {}

    def driver():  # the study runs in a thread: Ray adds nodes only from the main thread
        try:
            result["summary"] = run(
                path, out, progress=bool(os.environ.get("GREENLLM_TEST_PROGRESS")), cluster="ray"
            )
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            result["error"] = exc

    t = threading.Thread(target=driver, daemon=True)
    t.start()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and t.is_alive():
        try:
            if store_file.exists() and dev_b_windows() >= 2:
                break
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    c.remove_node(nodes["dev-b"])  # mid-cell: dev-b's first group has stored 2+ windows
    events.append("removed")
    time.sleep(2.0)
    nodes["dev-b"] = c.add_node(num_cpus=1, resources={"dev-b": 1, "greenllm_meter": 1})
    events.append("added")
    t.join(timeout=300)
    assert not t.is_alive() and "error" not in result, result.get("error")
    s = result["summary"]
    assert events == ["removed", "added"]
    assert s.status == "finished"
    with Store(out, create=False) as st:
        envs = st.device_environments(s.run_id)
        counts = st.counts()
        by_ckey: dict[str, list] = {}
        for u in units:
            by_ckey.setdefault(u.comparison_key, [])
        for k in by_ckey:
            by_ckey[k] = st.windows(k)
    # every cell is complete, each window exactly once per (round, cell)
    assert counts["benches"] == 8 and counts["evals"] == 8 and counts["steps"] == 2
    for k, ws in by_ckey.items():
        rounds = sorted({w["round"] for w in ws})
        assert rounds == [1, 2, 3, 4], (k, rounds)
        assert len(ws) == 8 and len({(w["round"], w["variant_key"]) for w in ws}) == 8
    # each device's cells ran on a node that has that device's resource
    assert envs["dev-a"]["node"]["ray_node_id"] == nodes["dev-a"].node_id
    assert envs["dev-b"]["node"]["ray_node_id"] == nodes["dev-b"].node_id  # the new node
    assert _bench_keys_done(store_file) == 8


def test_compress_on_a_ray_device_sends_the_checkpoints_back(tmp_path, ray_cluster):
    _, nodes = ray_cluster
    path = _study(tmp_path, RAY2, repeats=2)
    data = yaml.safe_load(path.read_text())
    data["models"] = data["models"][:1]
    data["compress_on"] = "dev-b"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="run with --cluster"):
        run(path, tmp_path / "out", progress=False)
    s = run(path, tmp_path / "out", progress=False, cluster="ray")
    assert s.status == "finished"
    with Store(tmp_path / "out", create=False) as st:
        units = plan(load_recipe(path))
        steps = st.steps(units[1].variant_key)
        assert len(steps) == 1 and steps[0].energy is not None  # metered on dev-b, stored here
        assert st.counts()["benches"] == 4
    art = tmp_path / "out" / "artifacts" / units[1].variant_key
    assert (art / "greenllm.json").exists()  # the node's checkpoint, written by the driver


def test_variants_across_runtimes_each_with_its_own_baseline(tmp_path):
    """Issue 14's variants x runtimes: one machine, two runtimes as two devices of a study;
    int8 is paired with the baseline of its own runtime, and every row names its runtime."""
    import json

    from greenllm.testing import tiny_bpe_tokenizer, tiny_causal_lm

    model, tok = tiny_causal_lm(0, vocab_size=320), tiny_bpe_tokenizer()
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    (tmp_path / "text.txt").write_text("the quick brown fox jumps over the lazy dog. " * 10)
    data = {
        "schema_version": 1,
        "name": "runtimes",
        "model": {"id": str(tmp_path / "m")},
        "variants": {"int8": [{"quantize": {"method": "int8_weight"}}]},
        "evals": [{"perplexity": {"data": str(tmp_path / "text.txt"), "max_length": 32}}],
        "workload": {
            "prompts": ["the quick", "a dog"],
            "max_new_tokens": 4,
            "warmup": 0,
            "repeats": 2,
            "min_window_s": 0,
        },
        "meters": ["estimate"],
        "measure": {"hz": 100, "on_disturbance": "flag"},
        **CARBON,
        "devices": [
            {"name": "eager", "profile": "cpu", "runtime": "torch"},
            {"name": "llama", "profile": "cpu", "runtime": "llama.cpp", "threads": 1},
        ],
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data))
    s = run(tmp_path / "r.yaml", tmp_path / "out", progress=False)
    assert s.status == "finished"
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    rt = {(v["device"], v["variant"]): v["bench"]["device"]["runtime"] for v in doc["variants"]}
    assert rt == {
        ("eager", "baseline"): "torch",
        ("eager", "int8"): "torch",
        ("llama", "baseline"): "llama.cpp",
        ("llama", "int8"): "llama.cpp",
    }
    for v in doc["variants"]:
        if v["variant"] == "int8":  # paired within its own runtime's rounds
            assert v["deltas"]["basis"] == "paired rounds"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "llama.cpp" in md and "int8 · " in md


def test_only_device_stores_merge_with_compare(tmp_path):
    """Each board runs its own cells (--only-device); compare merges the stores into the
    same cross report a cluster run gives."""
    import csv

    from greenllm.report.compare import compare

    remote = [
        {"name": "dev-a", "profile": "cpu", "via": "ray:dev-a"},
        {"name": "dev-b", "profile": "raspberry-pi-5", "via": "ray:dev-b"},
    ]
    path = _study(tmp_path, remote)
    for d in ("dev-a", "dev-b"):
        assert run(path, tmp_path / d, progress=False, only_device=d).status == "finished"
    compare([tmp_path / "dev-a", tmp_path / "dev-b"], tmp_path / "merged")
    with open(tmp_path / "merged" / "study.csv", newline="") as f:
        cells = list(csv.DictReader(f))
    assert len(cells) == 8 and all(c["complete"] == "True" for c in cells)
    assert {c["device"] for c in cells} == {"dev-a", "dev-b"}
    # the same cells twice is refused
    with pytest.raises(Exception, match="dev-a"):
        compare([tmp_path / "dev-a", tmp_path / "dev-a"], tmp_path / "twice")
