"""The results store: one SQLite file (stdlib sqlite3, WAL journal), schema versioned.

Every finished unit of work (a compression step, an evaluation, a benchmark) is committed in
its own transaction before the next one begins, so a run killed at any moment (kill -9
included) loses no finished result. Units are keyed by hashes of their definitions (variant
key = model + steps + calibration + seed; eval key = variant key + eval config; bench key =
variant key + workload + meters + sampling), and the keys are primary keys: re-running resumes
and skips finished work, and a resume after a kill never duplicates a row.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from .errors import DataError
from .outdir import storage_error
from .results import BenchResult, EvalResult, StepResult

# 2 added the windows table (rounds), 3 the device_environment table (studies across devices);
# older stores are upgraded in place (both only add tables)
STORE_SCHEMA_VERSION = 3
STORE_FILENAME = "greenllm.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipe_name TEXT NOT NULL,
    recipe_json TEXT NOT NULL,
    plan_json TEXT NOT NULL,
    started_at_unix_s REAL NOT NULL,
    finished_at_unix_s REAL,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS environment (
    run_id INTEGER PRIMARY KEY REFERENCES runs(id),
    hardware_json TEXT NOT NULL,
    software_json TEXT NOT NULL,
    meters_json TEXT NOT NULL,
    sampling_hz REAL,
    idle_s REAL
);
CREATE TABLE IF NOT EXISTS variants (
    variant_key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    definition_json TEXT NOT NULL,
    n_steps INTEGER NOT NULL,
    first_run_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    variant_key TEXT NOT NULL REFERENCES variants(variant_key),
    idx INTEGER NOT NULL,
    step TEXT NOT NULL,
    method TEXT NOT NULL,
    duration_s REAL NOT NULL,
    energy_j REAL,
    result_json TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    PRIMARY KEY (variant_key, idx)
);
CREATE TABLE IF NOT EXISTS evals (
    eval_key TEXT PRIMARY KEY,
    variant_key TEXT NOT NULL REFERENCES variants(variant_key),
    task TEXT NOT NULL,
    result_json TEXT NOT NULL,
    run_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS windows (
    comparison_key TEXT NOT NULL,
    round INTEGER NOT NULL,
    variant_key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    row_json TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    PRIMARY KEY (comparison_key, round, variant_key, seq)
);
CREATE TABLE IF NOT EXISTS device_environment (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    device TEXT NOT NULL,
    env_json TEXT NOT NULL,
    PRIMARY KEY (run_id, device)
);
CREATE TABLE IF NOT EXISTS benches (
    bench_key TEXT PRIMARY KEY,
    variant_key TEXT NOT NULL REFERENCES variants(variant_key),
    result_json TEXT NOT NULL,
    run_id INTEGER NOT NULL
);
"""


def _not_a_database(exc: BaseException) -> bool:
    """True only when the file itself is not (or no longer) an SQLite database."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code in (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text


def store_path(out_dir_or_file: str | Path) -> Path:
    p = Path(out_dir_or_file)
    return p if p.suffix in (".sqlite", ".db") else p / STORE_FILENAME


class Store:
    """Open (or create) the store. ``Store(path, create=False)`` refuses a missing file."""

    def __init__(self, path: str | Path, *, create: bool = True):
        self.path = store_path(path)
        if not self.path.exists():
            if not create:
                raise DataError(
                    f"no results store at {str(self.path)!r}; run "
                    "'greenllm run RECIPE --out DIR' first"
                )
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise storage_error(exc, self.path.parent, "create the output directory") from None
        try:
            self.con = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise storage_error(exc, self.path, "open the results store") from None
        try:
            self.con.execute("PRAGMA journal_mode=WAL")
            self.con.execute("PRAGMA synchronous=FULL")
            self.con.execute("PRAGMA foreign_keys=ON")
            self._init_schema()
        except sqlite3.Error as exc:
            self.con.close()
            if _not_a_database(exc):
                raise DataError(
                    f"{str(self.path)!r} is not a greenllm results store ({exc}); "
                    "remove it or choose another --out directory"
                ) from None
            raise storage_error(exc, self.path, "open the results store") from None
        except BaseException:
            self.con.close()
            raise

    # ---------------------------------------------------------------- plumbing
    def _init_schema(self) -> None:
        with self._tx():
            for stmt in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                self.con.execute(stmt)
            row = self.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self.con.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?)", (str(STORE_SCHEMA_VERSION),)
                )
            elif int(row[0]) in (1, 2):  # v1/v2 -> v3 only add tables (created above)
                self.con.execute(
                    "UPDATE meta SET value=? WHERE key='schema_version'",
                    (str(STORE_SCHEMA_VERSION),),
                )
            elif int(row[0]) != STORE_SCHEMA_VERSION:
                raise DataError(
                    f"{str(self.path)!r} has store schema version {row[0]}; this "
                    f"greenllm reads version {STORE_SCHEMA_VERSION} (use --fresh or "
                    "another --out directory)"
                )

    class _Tx:
        def __init__(self, con, path):
            self.con, self.path = con, path

        def __enter__(self):
            try:
                self.con.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise storage_error(exc, self.path, "write the results store") from None
            return self.con

        def __exit__(self, et, ev, tb):
            if et is None:
                try:
                    self.con.execute("COMMIT")
                    return False
                except sqlite3.Error as exc:
                    ev = exc
            with contextlib.suppress(sqlite3.Error):
                self.con.execute("ROLLBACK")
            if isinstance(ev, sqlite3.Error) and not _not_a_database(ev):
                # disk full / read-only / permission: the real cause, never "not a store"
                raise storage_error(ev, self.path, "write the results store") from None
            return False

    def _tx(self):
        return self._Tx(self.con, self.path)

    def close(self) -> None:
        self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def schema_version(self) -> int:
        return int(
            self.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        )

    # ---------------------------------------------------------------- runs
    def begin_run(self, recipe_name: str, recipe: dict, plan: list[dict]) -> int:
        with self._tx() as con:
            cur = con.execute(
                "INSERT INTO runs (recipe_name, recipe_json, plan_json, started_at_unix_s, status)"
                " VALUES (?, ?, ?, ?, 'running')",
                (recipe_name, json.dumps(recipe), json.dumps(plan), time.time()),
            )
            return int(cur.lastrowid)

    def mark_interrupted(self) -> list[int]:
        """Runs still 'running' become 'interrupted' (call only while holding the output
        lock: then no live process writes them). Returns their ids."""
        with self._tx() as con:
            ids = [int(r[0]) for r in con.execute("SELECT id FROM runs WHERE status='running'")]
            con.execute("UPDATE runs SET status='interrupted' WHERE status='running'")
        return ids

    def finish_run(self, run_id: int, status: str) -> None:
        with self._tx() as con:
            con.execute(
                "UPDATE runs SET status=?, finished_at_unix_s=? WHERE id=?",
                (status, time.time(), run_id),
            )

    def set_environment(
        self,
        run_id: int,
        *,
        hardware: dict,
        software: dict,
        meters: Any,
        sampling_hz: float | None,
        idle_s: float | None,
    ) -> None:
        with self._tx() as con:
            con.execute(
                "INSERT OR REPLACE INTO environment VALUES (?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    json.dumps(hardware),
                    json.dumps(software),
                    json.dumps(meters),
                    sampling_hz,
                    idle_s,
                ),
            )

    def runs(self) -> list[dict[str, Any]]:
        rows = self.con.execute(
            "SELECT id, recipe_name, started_at_unix_s, finished_at_unix_s, "
            "status FROM runs ORDER BY id"
        ).fetchall()
        return [
            dict(zip(("id", "recipe_name", "started_at_unix_s", "finished_at_unix_s", "status"), r))
            for r in rows
        ]

    def latest_run(self) -> dict[str, Any] | None:
        row = self.con.execute(
            "SELECT id, recipe_name, recipe_json, plan_json, "
            "started_at_unix_s, finished_at_unix_s, status FROM runs "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        out = {
            "id": row[0],
            "recipe_name": row[1],
            "recipe": json.loads(row[2]),
            "plan": json.loads(row[3]),
            "started_at_unix_s": row[4],
            "finished_at_unix_s": row[5],
            "status": row[6],
        }
        out["environment"] = self.environment(row[0])
        return out

    def environment(self, run_id: int) -> dict[str, Any] | None:
        row = self.con.execute(
            "SELECT hardware_json, software_json, meters_json, sampling_hz, "
            "idle_s FROM environment WHERE run_id=?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        return {
            "hardware": json.loads(row[0]),
            "software": json.loads(row[1]),
            "meters": json.loads(row[2]),
            "sampling_hz": row[3],
            "idle_s": row[4],
        }

    def set_device_environment(self, run_id: int, device: str, env: dict[str, Any]) -> None:
        """The environment of one device of a study (hardware, software, meters, idle power,
        the Ray node it ran on): each device of a study has its own."""
        with self._tx() as con:
            con.execute(
                "INSERT OR REPLACE INTO device_environment VALUES (?, ?, ?)",
                (run_id, device, json.dumps(env, default=str)),
            )

    def device_environments(self, run_id: int) -> dict[str, dict[str, Any]]:
        """device name -> environment, for the devices of ``run_id`` (empty without a study)."""
        rows = self.con.execute(
            "SELECT device, env_json FROM device_environment WHERE run_id=? ORDER BY device",
            (run_id,),
        ).fetchall()
        return {r[0]: json.loads(r[1]) for r in rows}

    # ---------------------------------------------------------------- variants and steps
    def ensure_variant(
        self, key: str, name: str, definition: dict, n_steps: int, run_id: int
    ) -> None:
        with self._tx() as con:
            con.execute(
                "INSERT OR IGNORE INTO variants VALUES (?, ?, ?, ?, ?)",
                (key, name, json.dumps(definition), n_steps, run_id),
            )
            con.execute("UPDATE variants SET name=? WHERE variant_key=?", (name, key))

    def add_step(self, variant_key: str, idx: int, result: StepResult, run_id: int) -> bool:
        """Store a finished step; False (and nothing written) if it was already stored."""
        energy = result.energy.energy_j if result.energy is not None else None
        with self._tx() as con:
            cur = con.execute(
                "INSERT OR IGNORE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    variant_key,
                    idx,
                    result.step,
                    result.method,
                    result.duration_s,
                    energy,
                    json.dumps(result.to_dict()),
                    run_id,
                ),
            )
            return cur.rowcount == 1

    def steps(self, variant_key: str) -> list[StepResult]:
        rows = self.con.execute(
            "SELECT result_json FROM steps WHERE variant_key=? ORDER BY idx", (variant_key,)
        ).fetchall()
        return [StepResult.from_dict(json.loads(r[0])) for r in rows]

    # ---------------------------------------------------------------- evals and benches
    def add_eval(self, eval_key: str, variant_key: str, result: EvalResult, run_id: int) -> bool:
        with self._tx() as con:
            cur = con.execute(
                "INSERT OR IGNORE INTO evals VALUES (?, ?, ?, ?, ?)",
                (eval_key, variant_key, result.task, json.dumps(result.to_dict()), run_id),
            )
            return cur.rowcount == 1

    def get_eval(self, eval_key: str) -> EvalResult | None:
        row = self.con.execute(
            "SELECT result_json FROM evals WHERE eval_key=?", (eval_key,)
        ).fetchone()
        return EvalResult.from_dict(json.loads(row[0])) if row else None

    def add_bench(self, bench_key: str, variant_key: str, result: BenchResult, run_id: int) -> bool:
        with self._tx() as con:
            cur = con.execute(
                "INSERT OR IGNORE INTO benches VALUES (?, ?, ?, ?)",
                (bench_key, variant_key, json.dumps(result.to_dict()), run_id),
            )
            return cur.rowcount == 1

    def get_bench(self, bench_key: str) -> BenchResult | None:
        row = self.con.execute(
            "SELECT result_json FROM benches WHERE bench_key=?", (bench_key,)
        ).fetchone()
        return BenchResult.from_dict(json.loads(row[0])) if row else None

    # ---------------------------------------------------------------- rounds
    def add_window(
        self, comparison_key: str, round_: int, variant_key: str, seq: int, row: dict, run_id: int
    ) -> bool:
        """One metered window of a round (committed at once: a kill keeps it)."""
        with self._tx() as con:
            cur = con.execute(
                "INSERT OR IGNORE INTO windows VALUES (?, ?, ?, ?, ?, ?)",
                (comparison_key, round_, variant_key, seq, json.dumps(row), run_id),
            )
            return cur.rowcount == 1

    def windows(self, comparison_key: str) -> list[dict[str, Any]]:
        """Every stored window of a comparison: dicts with round, variant_key, seq, row."""
        rows = self.con.execute(
            "SELECT round, variant_key, seq, row_json FROM windows WHERE comparison_key=? "
            "ORDER BY round, seq",
            (comparison_key,),
        ).fetchall()
        return [
            {"round": r[0], "variant_key": r[1], "seq": r[2], "row": json.loads(r[3])} for r in rows
        ]

    def drop_round(self, comparison_key: str, round_: int) -> int:
        """Delete the windows of an unfinished round (resume re-measures it whole, so that
        every kept round is paired within itself)."""
        with self._tx() as con:
            cur = con.execute(
                "DELETE FROM windows WHERE comparison_key=? AND round=?", (comparison_key, round_)
            )
            return int(cur.rowcount)

    def counts(self) -> dict[str, int]:
        """Row counts per table (used by tests and `greenllm report` to say what is there)."""
        return {
            t: int(self.con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
            for t in (
                "runs",
                "environment",
                "device_environment",
                "variants",
                "steps",
                "evals",
                "windows",
                "benches",
            )
        }
