"""SmolLM2-135M across runtimes: torch eager / compiled / int8_weight, llama.cpp F16 / Q8_0 / Q4_0
and ONNX Runtime fp32 / int8, measured in one run with the same bench and the same evaluators.

    python benchmarks/runtimes.py [--threads 2] [--rounds 3] [--tokens 32] [--prompts 4]
                                  [--ppl-docs 2] [--ppl-len 512] [--choice-limit 260]
                                  [--variants torch-eager,llama.cpp-q8_0,...] [--json out.json]

``llama.cpp-int8_weight`` is the compress -> export flow: ``int8_weight`` in torch, then GGUF Q8_0
keeping its int8 values (the other GGUF rows are exported from the fp32 model). Per variant:
  decode tok/s, TTFT  greenllm.bench (greedy, batch 1, EOS ignored, --tokens new tokens for each
                      of the first --prompts builtin prompts); median over --rounds rounds, the
                      variants interleaved in every round (load drifts hit them alike);
  J/token             the bench's energy meter: here the labelled *estimate* meter (no RAPL);
  size, bits/weight   bytes as stored (torch) or of the exported file(s);
  perplexity          the perplexity evaluator on the first --ppl-docs articles of WikiText-2
                      test (../shared/data/wikitext/wiki.test.raw), --ppl-len-token windows,
                      through each runtime's logits;
  choice acc          the choice evaluator on builtin:choice-sample (log-likelihood).
Ratios are against torch fp32 eager of the same run. Every runtime runs with --threads threads.
For llama.cpp the script also compares greenllm's clock with llama.cpp's own perf counters
(llama_perf_context) over the same requests: decode tokens/s by both (goal: within 3 %).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _shared import WIKITEXT_TEST as WIKITEXT
from _shared import decode_workload

VARIANTS = (
    "torch-eager",
    "torch-compiled",
    "torch-int8_weight",
    "llama.cpp-f16",
    "llama.cpp-q8_0",
    "llama.cpp-q4_0",
    "llama.cpp-int8_weight",
    "onnxruntime-fp32",
    "onnxruntime-int8",
)


def _open(name, model, tok, threads, tmp):
    """(runtime object, export report or None) for a variant."""
    import copy

    from greenllm.export import export_model
    from greenllm.runtimes import open_runtime
    from greenllm.steps import compress

    if name == "torch-eager":
        return open_runtime("torch", model, tok, threads=threads)[0], None
    if name == "torch-compiled":
        rt = open_runtime("torch", model, tok, threads=threads, compile=True, max_cache_len=256)
        return rt[0], None
    if name == "torch-int8_weight":
        q, _ = compress(copy.deepcopy(model), ["quantize:method=int8_weight"])
        return open_runtime("torch", q, tok, threads=threads)[0], None
    if name == "llama.cpp-int8_weight":  # compress, then export keeping the int8 values
        q, _ = compress(copy.deepcopy(model), ["quantize:method=int8_weight"])
        rep = export_model(q, tok, "gguf", "q8_0", Path(tmp) / f"{name}.gguf")
        return open_runtime("llama.cpp", rep.path, threads=threads)[0], rep
    runtime, qtype = name.rsplit("-", 1)
    fmt = "gguf" if runtime == "llama.cpp" else "onnx"
    suffix = ".gguf" if fmt == "gguf" else "/model.onnx"
    rep = export_model(model, tok, fmt, qtype, Path(tmp) / f"{name}{suffix}")
    return open_runtime(runtime, rep.path, threads=threads)[0], rep


def _wikitext_slice(docs: int, folder: str) -> str | None:
    """The first ``docs`` articles of WikiText-2 test in a temporary file (not in the repo)."""
    from greenllm.evals.perplexity import split_wikitext

    if not WIKITEXT.is_file():
        return None
    articles = [a for a in split_wikitext(WIKITEXT.read_text(encoding="utf-8")) if a.strip()]
    path = Path(folder) / "wikitext-slice.raw"
    path.write_text("\n".join(articles[:docs]) + "\n", encoding="utf-8")
    return str(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    ap.add_argument("--threads", type=int, default=2, help="threads of every runtime")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--ppl-docs", type=int, default=2)
    ap.add_argument("--ppl-len", type=int, default=512)
    ap.add_argument("--choice-limit", type=int, default=260)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json", default=None, help="write every number here")
    args = ap.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        ap.error(f"unknown variants {bad}; known: {', '.join(VARIANTS)}")
    if "torch-eager" not in names:
        names.insert(0, "torch-eager")  # the baseline of every ratio

    from greenllm.bench import bench
    from greenllm.evals.base import evaluate
    from greenllm.models import load_model

    model, tok = load_model(args.model)
    tmp = tempfile.mkdtemp(prefix="greenllm-runtimes-")
    opened, reports = {}, {}
    for name in names:
        t0 = time.perf_counter()
        opened[name], reports[name] = _open(name, model, tok, args.threads, tmp)
        print(f"# opened {name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    wl = decode_workload(args.prompts, args.tokens, args.threads)
    rows = {n: {"decode": [], "ttft": [], "j_tok": [], "estimated": None} for n in names}
    perf = {n: [] for n in names if n.startswith("llama.cpp")}
    for r in range(args.rounds):
        for name in names:
            rt = opened[name]
            if name in perf:
                rt.timings.clear()
            res = bench(rt, tok, wl, meters="auto", hz=10.0)
            row = rows[name]
            row["decode"].append(res.metrics["decode_tokens_per_s"])
            row["ttft"].append(res.metrics["ttft_s"])
            row["j_tok"].append(res.metrics["energy_per_token_j"])
            row["estimated"] = res.estimated
            row["meter"] = res.meter
            row["size_bytes"] = res.metrics["size_bytes"]
            row["threads"] = res.device.get("runtime_threads")
            if name in perf:
                t = rt.timings[1:]  # the timed requests (the first is the bench's warm-up)
                g_s, g_n = sum(x["decode_s"] for x in t), sum(x["decode_tokens"] for x in t)
                l_s, l_n = sum(x["t_eval_ms"] for x in t) / 1e3, sum(x["n_eval"] for x in t)
                perf[name].append(
                    {
                        "bench_decode_tok_s": res.metrics["decode_tokens_per_s"],
                        "greenllm_decode_tok_s": g_n / g_s,
                        "llama_decode_tok_s": l_n / l_s,
                        "greenllm_prefill_s": sum(x["prefill_s"] for x in t),
                        "llama_prefill_s": sum(x["t_p_eval_ms"] for x in t) / 1e3,
                    }
                )
            print(
                f"# round {r + 1} {name}: {res.metrics['decode_tokens_per_s']:.1f} tok/s",
                file=sys.stderr,
            )
    ppl_file = _wikitext_slice(args.ppl_docs, tmp)
    for name in names:
        rt = opened[name]
        target = rt.model if name.startswith("torch") else rt  # torch: the usual batched path
        if ppl_file:
            res = evaluate(
                target, tok, "perplexity", data=ppl_file, format="wikitext", max_length=args.ppl_len
            )
            rows[name]["perplexity"] = res.metrics["perplexity"]
            rows[name]["ppl_tokens"] = res.metrics["tokens"]
        ch = evaluate(target, tok, "choice", data="builtin:choice-sample", limit=args.choice_limit)
        rows[name]["acc"] = ch.metrics["acc"]
        rows[name]["acc_norm"] = ch.metrics["acc_norm"]
        print(f"# evaluated {name}", file=sys.stderr)
    for rt in opened.values():
        rt.close()

    base = rows["torch-eager"]
    b_dec = statistics.median(base["decode"])
    b_j = statistics.median(base["j_tok"])
    out = {"args": vars(args), "variants": {}, "llama_perf": {}}
    print(
        "| variant | decode tok/s | x eager | TTFT ms | J/token (est.) | x eager | size MB | "
        "bits/weight | tensor types | WikiText-2 ppl | Δ ppl | choice acc | Δ pp |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        row, rep = rows[name], reports[name]
        dec, ttft, jt = (statistics.median(row[k]) for k in ("decode", "ttft", "j_tok"))
        bpw = f"{rep.bits_per_weight:.2f}" if rep else "-"
        types = ", ".join(f"{k}×{v}" for k, v in sorted(rep.types.items())) if rep else "-"
        ppl = row.get("perplexity")
        dppl = (
            f"{(ppl / base['perplexity'] - 1) * 100:+.2f} %"
            if ppl and base.get("perplexity")
            else "-"
        )
        print(
            f"| {name} | {dec:.1f} | {dec / b_dec:.2f} | {ttft * 1e3:.1f} | {jt:.4f} | "
            f"{jt / b_j:.2f} | {row['size_bytes'] / 1e6:.1f} | {bpw} | {types} | "
            f"{ppl:.3f} | {dppl} | {row['acc'] * 100:.1f} % | "
            f"{(row['acc'] - base['acc']) * 100:+.1f} |"
            if ppl
            else f"| {name} | {dec:.1f} | {dec / b_dec:.2f} | {ttft * 1e3:.1f} | {jt:.4f} | "
            f"{jt / b_j:.2f} | {row['size_bytes'] / 1e6:.1f} | {bpw} | {types} | - | - | "
            f"{row['acc'] * 100:.1f} % | {(row['acc'] - base['acc']) * 100:+.1f} |"
        )
        out["variants"][name] = {
            **{k: v for k, v in row.items()},
            "decode_tok_s_median": dec,
            "ttft_s_median": ttft,
            "energy_per_token_j_median": jt,
            "export": rep.to_dict() if rep else None,
        }
    if perf:
        print()
        print(
            "| llama.cpp variant | bench decode tok/s | greenllm clock tok/s | llama.cpp "
            "counters tok/s | greenllm / llama.cpp | prefill s greenllm / llama.cpp |"
        )
        print("|---|---|---|---|---|---|")
        for name, runs in perf.items():
            agg = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            ratio = agg["greenllm_decode_tok_s"] / agg["llama_decode_tok_s"]
            print(
                f"| {name} | {agg['bench_decode_tok_s']:.1f} | {agg['greenllm_decode_tok_s']:.1f} "
                f"| {agg['llama_decode_tok_s']:.1f} | {ratio:.3f} | "
                f"{agg['greenllm_prefill_s']:.3f} / {agg['llama_prefill_s']:.3f} |"
            )
            out["llama_perf"][name] = {"rounds": runs, "median": agg, "ratio": ratio}
    meter = base.get("meter")
    print(f"\nmeter: {meter}{' (ESTIMATE)' if base['estimated'] else ''}; threads {args.threads}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
