"""Compression quality on SmolLM2-135M: perplexity, size, compress time and memory per method.

    python benchmarks/compress_quality.py [--rows dense,magnitude50,wanda50,...]
        [--windows 16] [--seq-len 512] [--samples 32] [--cal-seq-len 512]
        [--text FILE] [--json out.json]

Text: WikiText-2 test (../shared/data/wikitext/wiki.test.raw) when present, else ``--text``.
Perplexity is token perplexity over the first ``--windows`` x ``--seq-len`` tokens of the text
(non-overlapping windows, the same slice for every row). Calibration windows (``--samples`` x
``--cal-seq-len`` tokens, seeded) are drawn from the second half of the text only, so the
evaluated tokens are never calibration tokens.

Columns: method, sparsity or bits, perplexity, delta % vs dense (same run), size_bytes
(greenllm.models.model_size_bytes: unstructured zeros are still stored densely), params,
compress time_s (wall) and cpu_s (process CPU time, all threads: on a shared machine
cpu_s / cores is the better guess of quiet-machine wall time), peak RSS during the step
(sampled at 20 Hz) and the RSS growth over the step, and the step's energy in joules
(``--meter``, default auto: RAPL / NVML where readable, else the labelled CPU estimate; the
table says "(est.)" for an estimate). Goals (issue 3): at 50 % sparsity
sparsegpt <= wanda < magnitude in perplexity, wanda at least 5x closer to dense than
magnitude, Wanda 50 % with 32x512-token calibration <= 60 s on 2 cores; int8 weight-only
delta perplexity <= 2 %.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import threading
import time
from pathlib import Path

from _shared import WIKITEXT_TEST as WIKITEXT

ROWS = {
    "dense": (None, "-"),
    "magnitude50": ("prune:method=magnitude,sparsity=0.5", "50 %"),
    "wanda50": ("prune:method=wanda,sparsity=0.5", "50 %"),
    "sparsegpt50": ("prune:method=sparsegpt,sparsity=0.5", "50 %"),
    "wanda2:4": ("prune:method=wanda,pattern=2:4", "2:4"),
    "sparsegpt2:4": ("prune:method=sparsegpt,pattern=2:4", "2:4"),
    "neurons25": ("prune:method=neurons,sparsity=0.25", "25 % FFN"),
    "layers20": ("prune:method=layers,sparsity=0.2", "6/30 layers"),
    "int8_weight": ("quantize:method=int8_weight", "8 bit"),
    # 4-bit at group 64 (the offline SmolLM2 is de-quantized Q4_1 at blocks of 32: any 4-bit
    # grid of group 32 would look lossless on it)
    "rtn4g64": ("quantize:method=rtn,bits=4,group_size=64,sym=true", "4 bit g64 sym"),
    "gptq4g64": ("quantize:method=gptq,bits=4,group_size=64,sym=true", "4 bit g64 sym"),
    "rtn4g64a": ("quantize:method=rtn,bits=4,group_size=64,sym=false", "4 bit g64 asym"),
    "gptq4g64a": ("quantize:method=gptq,bits=4,group_size=64,sym=false", "4 bit g64 asym"),
    "gptq4g64a-act": (
        "quantize:method=gptq,bits=4,group_size=64,sym=false,desc_act=true,static_groups=true",
        "4 bit g64 asym act-order",
    ),
    "gptq4g64-act": (
        "quantize:method=gptq,bits=4,group_size=64,sym=true,desc_act=true,static_groups=true",
        "4 bit g64 sym act-order",
    ),
    "gptq4g64a-act-clip": (
        "quantize:method=gptq,bits=4,group_size=64,sym=false,desc_act=true,static_groups=true,"
        "clip=true",
        "4 bit g64 asym act-order clip",
    ),
    "gptq4g64a-act-clip-out": (
        "quantize:method=gptq,bits=4,group_size=64,sym=false,desc_act=true,static_groups=true,"
        "clip=true,clip_cost=output",
        "4 bit g64 asym act-order clip (output cost)",
    ),
    "gptq4g64a-act-clip-ts": (
        "quantize:method=gptq,bits=4,group_size=64,sym=false,desc_act=true,static_groups=true,"
        "clip=true,true_sequential=true",
        "4 bit g64 asym act-order clip true-sequential",
    ),
    "gptq4g64-act-clip": (
        "quantize:method=gptq,bits=4,group_size=64,sym=true,desc_act=true,static_groups=true,"
        "clip=true",
        "4 bit g64 sym act-order clip",
    ),
    "gptq4g64-act-clip-gc": (
        "quantize:method=gptq,bits=4,group_size=64,sym=true,desc_act=true,static_groups=true,"
        "clip=true,clip_cost=gptq",
        "4 bit g64 sym act-order clip (gptq cost)",
    ),
    "awq+gptq4g64a": (
        "quantize:method=awq,bits=4,group_size=64,sym=false,rounding=gptq,desc_act=true,"
        "static_groups=true",
        "4 bit g64 asym",
    ),
    "awq+gptq4g64a-nonseq": (
        "quantize:method=awq,bits=4,group_size=64,sym=false,rounding=gptq,desc_act=true,"
        "static_groups=true,sequential=false",
        "4 bit g64 asym, float-model activations",
    ),
    "awq+gptq4g64": (
        "quantize:method=awq,bits=4,group_size=64,sym=true,rounding=gptq,desc_act=true,"
        "static_groups=true",
        "4 bit g64 sym",
    ),
    "awq+gptq4g64-gc": (
        "quantize:method=awq,bits=4,group_size=64,sym=true,rounding=gptq,desc_act=true,"
        "static_groups=true,clip_cost=gptq",
        "4 bit g64 sym (gptq cost)",
    ),
    "rtn4pc": ("quantize:method=rtn,bits=4,group_size=-1,sym=false", "4 bit per channel asym"),
    "gptq4pc": (
        "quantize:method=gptq,bits=4,group_size=-1,sym=false,desc_act=true",
        "4 bit per channel asym act-order",
    ),
    "awq4g64": ("quantize:method=awq,bits=4,group_size=64,sym=true", "4 bit g64 sym"),
    "awq4g64a": ("quantize:method=awq,bits=4,group_size=64,sym=false", "4 bit g64 asym"),
    "sparsegpt50+gptq4": (
        "quantize:method=gptq,bits=4,group_size=64,sym=false,sparsity=0.5",
        "50 % + 4 bit g64",
    ),
    "sparsegpt50+gptq4-act-clip": (
        "quantize:method=gptq,bits=4,group_size=64,sym=false,sparsity=0.5,desc_act=true,"
        "static_groups=true,clip=true",
        "50 % + 4 bit g64 act-order clip",
    ),
    "bnb_nf4": ("quantize:method=bnb_nf4", "4 bit nf4 b64"),
}
DEFAULT_ROWS = "dense,magnitude50,wanda50,sparsegpt50,wanda2:4,neurons25,layers20,int8_weight"


class PeakRSS:
    """Samples this process's RSS in a thread; ``peak`` and ``start`` in bytes."""

    def __init__(self, hz: float = 20.0):
        import psutil

        self._proc = psutil.Process()
        self._dt = 1.0 / hz
        self._stop = threading.Event()
        self.start = self.peak = self._proc.memory_info().rss

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self._dt)

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def step_available(spec: str | None) -> str | None:
    """None when the row can run, else why not."""
    if spec is None or spec.startswith("prune:"):
        return None
    try:
        from greenllm.steps.quantize import QUANT_METHODS  # noqa: F401
    except ImportError as exc:
        return f"quantize step not importable ({exc})"
    method = spec.split("method=")[1].split(",")[0]
    if method not in QUANT_METHODS:
        return f"quantize method {method!r} not registered"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=DEFAULT_ROWS)
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--cal-seq-len", type=int, default=512)
    ap.add_argument("--text", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--meter",
        default="auto",
        help="energy meter of the compress step (auto: RAPL/NVML "
        "where readable, else the labelled estimate)",
    )
    args = ap.parse_args(argv)

    import torch

    from greenllm.evals.perplexity import token_perplexity
    from greenllm.measure import measure
    from greenllm.models import load_model, model_size_bytes, param_count
    from greenllm.steps import compress

    text_path = WIKITEXT if WIKITEXT.exists() else args.text
    if text_path is None or not Path(text_path).exists():
        print(
            "no text: ../shared/data/wikitext/wiki.test.raw is absent; pass --text FILE",
            file=sys.stderr,
        )
        return 2
    text = Path(text_path).read_text(encoding="utf-8")
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        print(f"unknown rows {unknown}; known: {', '.join(ROWS)}", file=sys.stderr)
        return 2

    base, tok = load_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    n_eval = args.windows * args.seq_len
    eval_ids = tok(text[: len(text) // 2], add_special_tokens=False, return_tensors="pt").input_ids[
        :, :n_eval
    ]
    calibration = [text[len(text) // 2 :]]
    print(
        f"# SmolLM2-135M-Instruct (float32), {Path(text_path).name}: perplexity on "
        f"{eval_ids.shape[1]} tokens ({args.windows}x{args.seq_len}); calibration "
        f"{args.samples}x{args.cal_seq_len} tokens from the text's second half; "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )

    results, dense_ppl = [], None
    for name in rows:
        spec, amount = ROWS[name]
        why = step_available(spec)
        if why:
            results.append({"row": name, "skipped": why})
            print(f"  {name}: skipped ({why})", flush=True)
            continue
        model = copy.deepcopy(base)
        t_wall = t_cpu = 0.0
        peak = start = energy_j = estimated = None
        if spec is not None:
            if spec.startswith("prune:") or "method=gptq" in spec or "method=awq" in spec:
                spec += (
                    f",calibration.samples={args.samples},calibration.seq_len={args.cal_seq_len}"
                )
            with PeakRSS() as mem, measure(args.meter, hz=10.0) as meter:
                w0, c0 = time.perf_counter(), time.process_time()
                model, _ = compress(model, spec, tokenizer=tok, calibration=calibration)
                t_wall, t_cpu = time.perf_counter() - w0, time.process_time() - c0
            peak, start = mem.peak, mem.start
            energy_j, estimated = meter.report.energy_j, meter.report.estimated
        ppl = token_perplexity(model, eval_ids, args.seq_len)
        if name == "dense":
            dense_ppl = ppl
        zeros = sum(int((p == 0).sum()) for p in model.parameters() if p.dim() == 2)
        res = {
            "row": name,
            "amount": amount,
            "perplexity": ppl,
            "delta_pct": (ppl / dense_ppl - 1) * 100 if dense_ppl else None,
            "size_bytes": model_size_bytes(model),
            "params": param_count(model),
            "zero_params": zeros,
            "time_s": t_wall,
            "cpu_s": t_cpu,
            "energy_j": energy_j,
            "energy_estimated": estimated,
            "peak_rss_bytes": peak,
            "rss_growth_bytes": (peak - start) if peak else None,
        }
        results.append(res)
        print(f"  {name}: ppl {ppl:.2f}  time {t_wall:.1f} s  cpu {t_cpu:.1f} s", flush=True)
        del model

    print()
    print(
        "| method | sparsity / bits | perplexity | Δ % | size_bytes | params | time_s | cpu_s "
        "| energy_J | peak RSS MiB | RSS growth MiB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        if "skipped" in r:
            print(f"| {r['row']} | skipped: {r['skipped']} | | | | | | | | | |")
            continue
        d = "-" if r["delta_pct"] is None or r["row"] == "dense" else f"{r['delta_pct']:+.1f}"
        mib = lambda b: "-" if b is None else f"{b / 2**20:.0f}"
        joules = lambda r: (
            "-"
            if r["energy_j"] is None
            else f"{r['energy_j']:.0f}{' (est.)' if r['energy_estimated'] else ''}"
        )
        print(
            f"| {r['row']} | {r['amount']} | {r['perplexity']:.2f} | {d} | {r['size_bytes']} "
            f"| {r['params']} | {r['time_s']:.1f} | {r['cpu_s']:.1f} | {joules(r)} "
            f"| {mib(r['peak_rss_bytes'])} | {mib(r['rss_growth_bytes'])} |"
        )
    by = {r["row"]: r for r in results if "skipped" not in r}
    if dense_ppl and {"magnitude50", "wanda50"} <= by.keys():
        gap_m = by["magnitude50"]["perplexity"] - dense_ppl
        gap_w = by["wanda50"]["perplexity"] - dense_ppl
        print(
            f"\nwanda 50 % is {gap_m / gap_w:.1f}x closer to dense than magnitude 50 % (goal >= 5x)"
        )
    if {"wanda50", "sparsegpt50", "magnitude50"} <= by.keys():
        s, w, m = (by[k]["perplexity"] for k in ("sparsegpt50", "wanda50", "magnitude50"))
        print(f"sparsegpt <= wanda < magnitude at 50 %: {s <= w < m} ({s:.2f}, {w:.2f}, {m:.2f})")
    if "wanda50" in by:
        r = by["wanda50"]
        print(
            f"wanda 50 % compress time: {r['time_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU "
            f"(goal <= 60 s wall on 2 quiet cores)"
        )
    if args.json:
        args.json.write_text(json.dumps({"dense_perplexity": dense_ppl, "rows": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
