"""The store as a worker sees it: a snapshot to read, a stream of records to write.

In a study on Ray the driver is the only process that writes the SQLite store. A worker runs
the same runner code as a local run, against a ``RecordingStore``: reads come from a snapshot
the driver took of what the store already holds for that group (greenllm's resume), writes
update the snapshot (so the worker reads its own writes) and are handed to ``emit`` as plain
records. The driver applies each record with ``apply_record`` the moment it arrives, so a
killed worker, node or driver loses nothing that finished; every write is idempotent in the
store (``INSERT OR IGNORE`` on its key), so a retried group never duplicates a result.
Stdlib only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from .results import BenchResult, EvalResult, StepResult
from .store import Store

Record = tuple[str, dict[str, Any]]


def snapshot(
    store: Store, units: list[Any], run_id: int, device: str | None, window_keys: list[str]
) -> dict[str, Any]:
    """What the store holds for ``units`` (one group: a model on a device), as plain data;
    ``window_keys`` are the comparison keys its windows are stored under."""
    return {
        "run_id": run_id,
        "steps": {u.variant_key: [s.to_dict() for s in store.steps(u.variant_key)] for u in units},
        "evals": {k: e.to_dict() for u in units for k in u.eval_keys if (e := store.get_eval(k))},
        "benches": {u.bench_key: b.to_dict() for u in units if (b := store.get_bench(u.bench_key))},
        "windows": {k: store.windows(k) for k in window_keys},
        "environment": store.environment(run_id),
        "device_environment": (store.device_environments(run_id).get(device) if device else None),
        "device": device,
    }


class RecordingStore:
    """Duck-types the part of ``greenllm.store.Store`` the runner's group code uses."""

    def __init__(self, snap: dict[str, Any], emit: Callable[[Record], None]):
        self._s = copy.deepcopy(snap)
        self._emit = emit
        self.device = snap.get("device")
        self.path = None

    # ---------------------------------------------------------------- reads
    def steps(self, variant_key: str) -> list[StepResult]:
        return [StepResult.from_dict(d) for d in self._s["steps"].get(variant_key, [])]

    def get_eval(self, eval_key: str) -> EvalResult | None:
        d = self._s["evals"].get(eval_key)
        return EvalResult.from_dict(d) if d else None

    def get_bench(self, bench_key: str) -> BenchResult | None:
        d = self._s["benches"].get(bench_key)
        return BenchResult.from_dict(d) if d else None

    def windows(self, comparison_key: str) -> list[dict[str, Any]]:
        rows = self._s["windows"].get(comparison_key, [])
        return sorted(copy.deepcopy(rows), key=lambda w: (w["round"], w["seq"]))

    def environment(self, run_id: int) -> dict[str, Any] | None:
        if self.device is not None:
            return copy.deepcopy(self._s.get("device_environment") or self._s.get("environment"))
        return copy.deepcopy(self._s.get("environment"))

    def device_environments(self, run_id: int) -> dict[str, dict[str, Any]]:
        env = self._s.get("device_environment")
        return {self.device: copy.deepcopy(env)} if self.device and env else {}

    # ---------------------------------------------------------------- writes
    def ensure_variant(self, key: str, name: str, definition: dict, n_steps: int, run_id: int):
        self._emit(
            ("ensure_variant", dict(key=key, name=name, definition=definition, n_steps=n_steps))
        )

    def add_step(self, variant_key: str, idx: int, result: StepResult, run_id: int) -> bool:
        have = self._s["steps"].setdefault(variant_key, [])
        if idx < len(have):
            return False
        have.append(result.to_dict())
        self._emit(("add_step", dict(variant_key=variant_key, idx=idx, result=result.to_dict())))
        return True

    def add_eval(self, eval_key: str, variant_key: str, result: EvalResult, run_id: int) -> bool:
        if eval_key in self._s["evals"]:
            return False
        self._s["evals"][eval_key] = result.to_dict()
        self._emit(
            ("add_eval", dict(eval_key=eval_key, variant_key=variant_key, result=result.to_dict()))
        )
        return True

    def add_bench(self, bench_key: str, variant_key: str, result: BenchResult, run_id: int) -> bool:
        if bench_key in self._s["benches"]:
            return False
        self._s["benches"][bench_key] = result.to_dict()
        self._emit(
            (
                "add_bench",
                dict(bench_key=bench_key, variant_key=variant_key, result=result.to_dict()),
            )
        )
        return True

    def add_window(
        self, comparison_key: str, round_: int, variant_key: str, seq: int, row: dict, run_id: int
    ) -> bool:
        rows = self._s["windows"].setdefault(comparison_key, [])
        if any(
            (w["round"], w["variant_key"], w["seq"]) == (round_, variant_key, seq) for w in rows
        ):
            return False
        rows.append({"round": round_, "variant_key": variant_key, "seq": seq, "row": row})
        self._emit(
            (
                "add_window",
                dict(
                    comparison_key=comparison_key,
                    round_=round_,
                    variant_key=variant_key,
                    seq=seq,
                    row=row,
                ),
            )
        )
        return True

    def drop_round(self, comparison_key: str, round_: int) -> int:
        rows = self._s["windows"].get(comparison_key, [])
        keep = [w for w in rows if w["round"] != round_]
        self._s["windows"][comparison_key] = keep
        self._emit(("drop_round", dict(comparison_key=comparison_key, round_=round_)))
        return len(rows) - len(keep)

    def set_environment(self, run_id: int, **env: Any) -> None:
        """A worker's environment is its device's (the run's belongs to the driver)."""
        self.set_device_environment(run_id, self.device or "", env)

    def set_device_environment(self, run_id: int, device: str, env: dict[str, Any]) -> None:
        self._s["device_environment"] = copy.deepcopy(env)
        self._emit(("set_device_environment", dict(device=device, env=env)))


def apply_record(store: Store, run_id: int, record: Record) -> bool:
    """Commit one worker record to the store (the driver side); True if it wrote something
    new. Unknown kinds are refused (a newer worker than driver)."""
    kind, a = record
    if kind == "ensure_variant":
        store.ensure_variant(a["key"], a["name"], a["definition"], a["n_steps"], run_id)
        return True
    if kind == "add_step":
        return store.add_step(a["variant_key"], a["idx"], StepResult.from_dict(a["result"]), run_id)
    if kind == "add_eval":
        return store.add_eval(
            a["eval_key"], a["variant_key"], EvalResult.from_dict(a["result"]), run_id
        )
    if kind == "add_bench":
        return store.add_bench(
            a["bench_key"], a["variant_key"], BenchResult.from_dict(a["result"]), run_id
        )
    if kind == "add_window":
        return store.add_window(
            a["comparison_key"], a["round_"], a["variant_key"], a["seq"], a["row"], run_id
        )
    if kind == "drop_round":
        return store.drop_round(a["comparison_key"], a["round_"]) > 0
    if kind == "set_device_environment":
        store.set_device_environment(run_id, a["device"], a["env"])
        return True
    from .errors import GreenLLMError

    raise GreenLLMError(
        f"a worker sent a record of kind {kind!r} this driver does not know; install the same "
        "greenllm version on every node"
    )


__all__ = ["RecordingStore", "apply_record", "snapshot", "Record"]
