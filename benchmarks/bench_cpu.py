"""SmolLM2-135M on this CPU: fp32 against every 8-/16-bit quantize method available here.

For each variant: WikiText-2 perplexity on a fixed token slice (non-overlapping windows, the
same tokens for every variant), then greenllm.bench decode speed, TTFT, energy per token and
roofline fraction. Variants are benchmarked INTERLEAVED (round 1: fp32, int8_weight, ...;
round 2: ...) so slow drifts of a shared machine hit them alike; the ratio against fp32 is
taken per round and summarised by its median and its best round. One copy bandwidth probe,
measured at the start, is the roofline bandwidth of every row (unless the device profile has
a published one).

Each variant runs in two decode modes (``--modes``): ``eager`` (Hugging Face's dynamic KV
cache, one Python-level forward per token) and ``compiled`` (``workload.compile``: a static KV
cache and a torch.compile'd decode step, for fp32 and ``--compiled-methods``). Ratios are
against fp32 in the same mode and round. The compiled mode compiles during the first round's
warm-up (tens of seconds per variant); later rounds reuse it.

Goals (issue 5): an int8 method with <= 2 % perplexity cost decodes at >= 1.4x fp32
tokens/s; fp32 decode reaches >= 60 % of the roofline. Both are checked per mode.

    python benchmarks/bench_cpu.py [--rounds 3] [--max-new-tokens 32] [--prompts 2]
                                   [--ppl-tokens 4096] [--methods int8_weight,bf16,...]
                                   [--modes eager,compiled] [--compiled-methods ...]

Energy comes from the best meter available (``--meter``, default auto); on a machine without
RAPL/NVML it is the labelled CPU estimate and the table says so.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
from _shared import WIKITEXT_TEST as WIKI

from greenllm.bench import bench, measure_copy_bandwidth
from greenllm.errors import GreenLLMError
from greenllm.evals.perplexity import token_perplexity
from greenllm.models import load_model, model_size_bytes

# "+lm_head" = also quantize the output head (ignore=[]); SmolLM2 ties it to the embeddings,
# a fifth of the weights every decode step reads. Others: --methods torchao_int8_dynamic,bnb_int8
CANDIDATES = (
    "int8_weight",
    "int8_weight+lm_head",
    "dynamic_int8",
    "torchao_int8_weight",
    "quanto_int8",
    "bf16",
)


def build_variants(base, tokenizer, methods):
    from greenllm.steps import compress
    from greenllm.steps.quantize import QUANT_METHODS

    variants, skipped = {"fp32": base}, {}
    for m in methods:
        method, _, extra = m.partition("+")
        if method not in QUANT_METHODS:
            skipped[m] = "not in greenllm.steps.quantize's registry"
            continue
        cfg = {"method": method, **({"ignore": []} if extra == "lm_head" else {})}
        try:
            q, _ = compress(copy.deepcopy(base), {"quantize": cfg}, tokenizer=tokenizer)
        except GreenLLMError as exc:
            skipped[m] = str(exc)
            continue
        variants[m] = q
    return variants, skipped


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=2, help="built-in prompts per bench run")
    ap.add_argument("--ppl-tokens", type=int, default=4096)
    ap.add_argument("--ppl-window", type=int, default=512)
    ap.add_argument("--methods", default=",".join(CANDIDATES))
    ap.add_argument("--meter", default="auto")
    ap.add_argument("--modes", default="eager,compiled")
    ap.add_argument(
        "--compiled-methods",
        default="int8_weight,int8_weight+lm_head,bf16",
        help="variants (besides fp32) also run in the compiled mode",
    )
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    base, tok = load_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    variants, skipped = build_variants(base, tok, [m for m in args.methods.split(",") if m])
    for m, why in skipped.items():
        print(f"skipped {m}: {why}", file=sys.stderr)

    if not WIKI.exists():
        print(f"{WIKI} is absent: perplexity column left empty", file=sys.stderr)
        ppl = {name: None for name in variants}
    else:
        ids = tok(WIKI.read_text(encoding="utf-8")[:200_000], return_tensors="pt")["input_ids"][0]
        ids = ids[: args.ppl_tokens]
        ppl = {}
        for name, m in variants.items():
            ppl[name] = token_perplexity(m, ids, args.ppl_window)
            print(f"perplexity {name}: {ppl[name]:.3f}", file=sys.stderr, flush=True)

    bandwidth = measure_copy_bandwidth("cpu")
    meters = "auto" if args.meter == "auto" else args.meter.split(",")
    wl = {
        "prompts": "builtin:prompts",
        "limit": args.prompts,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": 1,
        "warmup": 1,
        "repeats": 1,
    }
    compiled = {"fp32", *args.compiled_methods.split(",")}
    rows = [
        (name, mode)
        for mode in args.modes.split(",")
        for name in variants
        if mode == "eager" or (mode == "compiled" and name in compiled)
    ]
    runs: dict[tuple, list] = {row: [] for row in rows}
    for rnd in range(args.rounds):
        for name, mode in rows:  # interleaved: every row once per round
            res = bench(
                variants[name],
                tok,
                {**wl, "compile": mode == "compiled"},
                meters=meters,
                bandwidth_bytes_per_s=bandwidth,
            )
            runs[(name, mode)].append(res)
            print(
                f"round {rnd + 1}/{args.rounds} {name} {mode}: "
                f"{res.metrics['decode_tokens_per_s']:.2f} tok/s "
                f"(warm-up {res.workload['warmup_s']:.1f} s)",
                file=sys.stderr,
                flush=True,
            )

    def med(row, key):
        vals = [r.metrics[key] for r in runs[row] if r.metrics.get(key) is not None]
        return statistics.median(vals) if vals else None

    first = runs[rows[0]][0]
    print(
        f"SmolLM2-135M-Instruct on {torch.get_num_threads()} CPU threads; {args.rounds} "
        f"interleaved rounds x {args.prompts} prompts x {args.max_new_tokens} new tokens; "
        f"copy bandwidth {bandwidth / 1e9:.2f} GB/s (measured); meter {first.meter}"
        f"{' (ESTIMATE)' if first.estimated else ''}; perplexity: WikiText-2 test, first "
        f"{args.ppl_tokens} tokens, {args.ppl_window}-token windows (eager)"
    )
    hdr = (
        f"{'variant':<22}{'mode':>9}{'size MB':>9}{'ppl':>9}{'Δppl %':>8}{'decode tok/s':>14}"
        f"{'×fp32 med':>10}{'×fp32 best':>11}{'TTFT ms':>9}{'J/token':>9}{'roofline':>9}"
    )
    print(hdr)
    print("-" * len(hdr))
    summary = {}
    for name, mode in rows:
        base_tps = [r.metrics["decode_tokens_per_s"] for r in runs[("fp32", mode)]]
        ratios = [
            r.metrics["decode_tokens_per_s"] / b for r, b in zip(runs[(name, mode)], base_tps)
        ]
        dppl = (ppl[name] / ppl["fp32"] - 1) * 100 if ppl[name] and ppl["fp32"] else None
        summary[(name, mode)] = (statistics.median(ratios), max(ratios), dppl)
        print(
            f"{name:<22}{mode:>9}{model_size_bytes(variants[name]) / 1e6:>9.1f}"
            f"{(ppl[name] or float('nan')):>9.3f}"
            f"{(dppl if dppl is not None else float('nan')):>8.2f}"
            f"{med((name, mode), 'decode_tokens_per_s'):>14.2f}{summary[(name, mode)][0]:>10.2f}"
            f"{summary[(name, mode)][1]:>11.2f}{med((name, mode), 'ttft_s') * 1e3:>9.1f}"
            f"{med((name, mode), 'energy_per_token_j'):>9.3f}"
            f"{med((name, mode), 'roofline_fraction'):>9.2f}"
        )
    for mode in args.modes.split(","):
        ok = [
            n
            for (n, m), (r_med, _, d) in summary.items()
            if m == mode
            and n != "fp32"
            and d is not None
            and d <= 2.0
            and r_med >= 1.4
            and "int8" in n
        ]
        roof = med(("fp32", mode), "roofline_fraction")
        print(
            f"[{mode}] goal int8 (<=2 % ppl, >=1.4x fp32 decode, median ratio): "
            f"{'MET by ' + ', '.join(ok) if ok else 'NOT MET'}; goal fp32 decode >= 60 % of "
            f"roofline: {'MET' if roof >= 0.6 else 'NOT MET'} ({roof:.2f})"
        )
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
