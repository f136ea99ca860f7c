"""The SQLite results store: schema, idempotent inserts, durability across connections."""

from __future__ import annotations

import sqlite3

import pytest

from greenllm.errors import DataError
from greenllm.results import BenchResult, DomainEnergy, EnergyReport, EvalResult, StepResult
from greenllm.store import STORE_SCHEMA_VERSION, Store


def _energy(j=12.5):
    d = DomainEnergy(
        meter="estimate",
        domain="cpu",
        energy_j=j,
        mean_power_w=5.0,
        samples=3,
        method="estimate",
        estimated=True,
    )
    return EnergyReport(
        duration_s=2.5,
        energy_j=j,
        mean_power_w=5.0,
        domains=(d,),
        samples=3,
        sampling_hz=10.0,
        method="estimate",
        estimated=True,
        meters=("estimate",),
    )


def _step(j=12.5):
    return StepResult(
        step="prune",
        method="wanda",
        config={"sparsity": 0.5},
        duration_s=2.5,
        size_bytes_before=1000,
        size_bytes_after=600,
        stats={"sparsity": 0.5},
        energy=_energy(j),
    )


def test_schema_version_and_wal(tmp_path):
    with Store(tmp_path) as s:
        assert s.schema_version == STORE_SCHEMA_VERSION
        mode = s.con.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode.lower() == "wal"
        assert set(s.counts()) == {
            "runs",
            "environment",
            "device_environment",
            "variants",
            "steps",
            "evals",
            "windows",
            "benches",
        }


def test_results_round_trip_and_no_duplicates(tmp_path):
    with Store(tmp_path) as s:
        run = s.begin_run("r", {"name": "r"}, [{"name": "baseline"}])
        s.set_environment(
            run,
            hardware={"cpu_count": 2},
            software={"python": "3"},
            meters={"requested": "auto"},
            sampling_hz=10.0,
            idle_s=0.0,
        )
        s.ensure_variant("k1", "wanda", {"steps": []}, 1, run)
        s.ensure_variant("k1", "wanda-renamed", {"steps": []}, 1, run)
        assert s.add_step("k1", 0, _step(), run) is True
        assert s.add_step("k1", 0, _step(99.0), run) is False  # first result kept
        ev = EvalResult(task="perplexity", n=3, metrics={"perplexity": 12.0}, duration_s=1.0)
        assert s.add_eval("e1", "k1", ev, run) and not s.add_eval("e1", "k1", ev, run)
        b = BenchResult(
            metrics={"energy_per_token_j": 0.1},
            ci95={"energy_per_token_j": 0.01},
            meter="estimate",
            estimated=True,
            repeats=3,
            energy=_energy(3.0),
        )
        assert s.add_bench("b1", "k1", b, run) and not s.add_bench("b1", "k1", b, run)
        s.finish_run(run, "finished")
    # a second connection (a resumed process) sees exactly what was committed
    with Store(tmp_path, create=False) as s:
        assert s.counts() == {
            "runs": 1,
            "environment": 1,
            "device_environment": 0,
            "variants": 1,
            "steps": 1,
            "evals": 1,
            "windows": 0,
            "benches": 1,
        }
        assert s.steps("k1")[0].energy.energy_j == 12.5
        assert s.steps("k1")[0] == _step()
        assert s.get_eval("e1") == ev
        assert s.get_bench("b1") == b
        assert s.get_eval("nope") is None
        latest = s.latest_run()
        assert latest["status"] == "finished" and latest["environment"]["sampling_hz"] == 10.0
        name = s.con.execute("SELECT name FROM variants").fetchone()[0]
        assert name == "wanda-renamed"


def test_missing_store_and_foreign_file(tmp_path):
    with pytest.raises(DataError, match="no results store"):
        Store(tmp_path / "nothing", create=False)
    bad = tmp_path / "greenllm.sqlite"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(DataError, match="not a greenllm results store"):
        Store(tmp_path)


def test_newer_schema_refused(tmp_path):
    Store(tmp_path).close()
    con = sqlite3.connect(tmp_path / "greenllm.sqlite")
    con.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(DataError, match="schema version 99"):
        Store(tmp_path)


def test_windows_of_rounds_are_kept_and_an_unfinished_round_can_be_dropped(tmp_path):
    with Store(tmp_path) as s:
        run = s.begin_run("r", {}, [])
        assert s.add_window("c", 1, "base", 0, {"energy_j": 1.0}, run)
        assert not s.add_window("c", 1, "base", 0, {"energy_j": 9.0}, run)  # no duplicate
        s.add_window("c", 1, "var", 0, {"energy_j": 2.0}, run)
        s.add_window("c", 2, "base", 0, {"energy_j": 3.0}, run)
        s.add_window("other", 1, "base", 0, {"energy_j": 4.0}, run)
    with Store(tmp_path, create=False) as s:  # committed: a resumed process sees them
        rows = s.windows("c")
        assert [(w["round"], w["variant_key"], w["row"]["energy_j"]) for w in rows] == [
            (1, "base", 1.0),
            (1, "var", 2.0),
            (2, "base", 3.0),
        ]
        assert s.drop_round("c", 2) == 1
        assert [w["round"] for w in s.windows("c")] == [1, 1]
        assert len(s.windows("other")) == 1


def test_a_version_1_store_is_upgraded_in_place(tmp_path):
    import sqlite3

    with Store(tmp_path) as s:
        s.begin_run("r", {}, [])
        s.con.execute("DROP TABLE windows")
        s.con.execute("DROP TABLE device_environment")
        s.con.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    with Store(tmp_path, create=False) as s:
        assert s.schema_version == STORE_SCHEMA_VERSION == 3
        assert s.counts()["runs"] == 1 and s.counts()["windows"] == 0
    con = sqlite3.connect(tmp_path / "greenllm.sqlite")
    assert con.execute("SELECT COUNT(*) FROM windows").fetchone()[0] == 0
    con.close()


def test_device_environments_are_per_run_and_device(tmp_path):
    with Store(tmp_path) as s:
        run = s.begin_run("r", {}, [])
        assert s.device_environments(run) == {}
        s.set_device_environment(run, "orin", {"hardware": {"cpu_count": 6}})
        s.set_device_environment(run, "pi5", {"hardware": {"cpu_count": 4}})
        s.set_device_environment(run, "orin", {"hardware": {"cpu_count": 8}})  # replaced
        other = s.begin_run("r", {}, [])
        assert s.device_environments(other) == {}
    with Store(tmp_path, create=False) as s:
        envs = s.device_environments(run)
        assert list(envs) == ["orin", "pi5"]
        assert envs["orin"]["hardware"]["cpu_count"] == 8
