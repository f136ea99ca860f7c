"""Do the report's verdicts survive a machine whose load changes during the run?

Runs a greenllm recipe on SmolLM2-135M with three models measured in interleaved rounds:
the baseline, ``mag1`` (magnitude pruning at 1 % sparsity: the same dense compute as the
baseline, so no real energy difference) and ``int8`` (``int8_weight``, lm_head included).
While the rounds run, this script starts and stops a CPU load of its own (a busy process
on ``--load-cores`` cores, on for ``--on-s`` seconds, off for ``--off-s``), the situation of
the quickstart that once reported the same int8 kernel as -47 % and +361 %.

Printed: per variant the paired energy-per-token delta with its 95 % CI, the verdict, rounds,
flagged / rerun windows; next to it the unpaired delta a sequential benchmark would compute
from the same windows (means of each model's windows, CIs propagated as independent), and
the share of windows that ran under the script's load. Expected: ``mag1`` inconclusive (no
significant difference), ``int8`` greener.

    python benchmarks/verdicts_under_load.py [--on-s 15 --off-s 15 --load-cores 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from pathlib import Path

from _shared import add_threads_option


def _burn(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF


class Load:
    """A square-wave CPU load of our own: ``cores`` busy processes, on/off periods."""

    def __init__(self, cores: int, on_s: float, off_s: float):
        self.cores, self.on_s, self.off_s = cores, on_s, off_s
        self.events: list[tuple[float, bool]] = []  # (unix time, load on?)
        self._quit = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        ctx = mp.get_context("spawn")
        while not self._quit.is_set():
            stop = ctx.Event()
            procs = [
                ctx.Process(target=_burn, args=(stop,), daemon=True) for _ in range(self.cores)
            ]
            for p in procs:
                p.start()
            self.events.append((time.time(), True))
            self._quit.wait(self.on_s)
            stop.set()
            for p in procs:
                p.join(5)
            self.events.append((time.time(), False))
            self._quit.wait(self.off_s)

    def loaded_at(self, t: float) -> bool:
        state = False
        for ts, on in self.events:
            if ts > t:
                break
            state = on
        return state

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._quit.set()
        self._thread.join(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--on-s", type=float, default=15.0, help="seconds of load per cycle")
    ap.add_argument("--off-s", type=float, default=15.0, help="seconds without load per cycle")
    ap.add_argument("--load-cores", type=int, default=1, help="busy processes while on")
    ap.add_argument("--max-time-s", type=float, default=300.0, help="most seconds of rounds")
    ap.add_argument("--out", default=None, help="output directory (default: a temp dir)")
    add_threads_option(ap)
    args = ap.parse_args()

    from greenllm.report import analysis as A
    from greenllm.runner import run
    from greenllm.stats import mean_ci95

    recipe = {
        "schema_version": 1,
        "name": "verdicts-under-load",
        "model": {"id": "HuggingFaceTB/SmolLM2-135M-Instruct", "dtype": "float32"},
        "variants": {
            "mag1": [{"prune": {"method": "magnitude", "sparsity": 0.01}}],
            "int8": [{"quantize": {"method": "int8_weight", "ignore": []}}],
        },
        "evals": [],
        "workload": {
            "prompts": "builtin:prompts",
            "limit": 4,
            "max_new_tokens": 16,
            "warmup": 1,
            "repeats": "auto",
            "precision": 0.05,
            "min_rounds": 4,
            "max_rounds": 25,
            "max_time_s": args.max_time_s,
        },
        "meters": "auto",
        "measure": {"hz": 10.0, "on_disturbance": "rerun", "max_reruns": 2},
        "carbon": {"region": "KOR"},
        "seed": 0,
    }
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out or tempfile.mkdtemp(prefix="greenllm-verdicts-"))
    t0 = time.time()
    with Load(args.load_cores, args.on_s, args.off_s) as load:
        run(recipe, out, resume=False, progress=True)
    wall = time.time() - t0
    doc = json.loads((out / "results.json").read_text())
    base = doc["variants"][0]
    from greenllm.store import Store

    with Store(out, create=False) as st:
        plan = st.latest_run()["plan"]
        windows = st.windows(plan[0]["comparison_key"])
    loaded = sum(
        1 for w in windows if load.loaded_at(float(w["row"].get("started_at_unix_s") or 0))
    )
    print()
    print(
        f"SmolLM2-135M, meter {base['bench']['meter']}, {len(windows)} windows in {wall:.0f} s; "
        f"{loaded} of them started while this script's load was on "
        f"({args.load_cores} core(s), {args.on_s:g} s on / {args.off_s:g} s off)"
    )
    print()
    head = (
        "variant",
        "paired Δ J/token",
        "verdict",
        "rounds",
        "flagged",
        "reruns",
        "unpaired Δ (same windows)",
    )
    print(" | ".join(head))
    print("|".join("---" for _ in head))
    b_vals = [r["energy_per_token_j"] for r in _rows(out, base["variant_key"])]
    mb, hb = mean_ci95(b_vals)
    for v in doc["variants"][1:]:
        d, hw = v["headline_delta_pct"], v["headline_delta_pct_ci95"]
        vals = [r["energy_per_token_j"] for r in _rows(out, v["variant_key"])]
        mv, hv = mean_ci95(vals)
        ud, uhw = A.rel_delta(mv, mb, hv, hb)
        print(
            f"{v['name']} | {d:+.1f} % ± {hw:.1f} | {v['verdict_note']} | "
            f"{v['bench']['workload']['rounds']} | {v['flagged_windows']} | {v['rerun_windows']} | "
            f"{100 * ud:+.1f} % ± {100 * uhw:.1f}"
        )
    verdicts = {v["name"]: v["verdict"] for v in doc["variants"][1:]}
    ok = verdicts.get("mag1") == "inconclusive" and verdicts.get("int8") == "greener"
    print()
    print("expected (mag1 inconclusive, int8 greener):", "yes" if ok else "NO")
    print(f"report: {out / 'report.md'}")
    return 0 if ok else 1


def _rows(out: Path, vkey: str) -> list[dict]:
    from greenllm.store import Store

    with Store(out, create=False) as st:
        for entry in st.latest_run()["plan"]:
            if entry["variant_key"] == vkey:
                b = st.get_bench(entry["bench_key"])
                return [r for r in b.per_repeat if r.get("energy_per_token_j") is not None]
    return []


if __name__ == "__main__":
    sys.exit(main())
