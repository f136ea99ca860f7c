"""Quantization on CPU: decode speed, perplexity and size of SmolLM2-135M, fp32 vs each method.

    python benchmarks/quant_speed.py [--tokens 32] [--repeats 5] [--windows 8] [--seq-len 512]
                                     [--methods int8_weight,bf16,...] [--json out.json]

For every variant (fp32 baseline + each CPU quantize method, plus the per-channel / per-tensor
and down_proj-skipping variants of torch.ao dynamic int8 the issue asks about):
  decode tokens/s  greedy decoding of --tokens tokens after a fixed prompt (KV cache, batch 1),
                   prefill excluded; median over --repeats rounds, the variants interleaved in
                   every round so machine load drifts hit all of them alike;
  agree            fraction of greedy tokens equal to fp32's (first repeat);
  perplexity       token perplexity on the first --windows x --seq-len tokens of WikiText-2
                   test (../shared/data/wikitext/wiki.test.raw), non-overlapping windows;
  size_bytes       greenllm.models.model_size_bytes (quantized storage as stored).
gptq / awq rows calibrate on 8x512 tokens from the text's second half (their decode speed is
the Int4Linear kernel's, as rtn's; compress_quality.py measures their quality).
Ratios are against fp32 measured in the same run. The goal from issue 5: an int8 method with
<= 2 % perplexity cost decoding at >= 1.4x fp32.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

from _shared import WIKITEXT_TEST as WIKITEXT
from _shared import add_threads_option, apply_threads

PROMPT = (
    "The history of the steam engine begins in the first century, when Hero of "
    "Alexandria described a device that"
)

VARIANTS = {
    "fp32": [],
    "bf16": ["quantize:method=bf16"],
    "int8_weight": ["quantize:method=int8_weight"],
    "int8_weight+lm_head": ["quantize:method=int8_weight,ignore=[]"],
    "dynamic_int8": ["quantize:method=dynamic_int8"],
    "dynamic_int8/tensor": ["quantize:method=dynamic_int8,per_channel=false"],
    "dynamic_int8-down_proj": ["quantize:method=dynamic_int8,ignore=[lm_head,down_proj]"],
    "torchao_int8_weight": ["quantize:method=torchao_int8_weight"],
    "torchao_int8_dynamic": ["quantize:method=torchao_int8_dynamic"],
    "quanto_int8": ["quantize:method=quanto_int8"],
    "quanto_int4": ["quantize:method=quanto_int4"],
    "bnb_int8": ["quantize:method=bnb_int8"],
    "bnb_nf4": ["quantize:method=bnb_nf4"],
    # packed 4-bit (Int4Linear, PyTorch's CPU int4 kernel) at group 64; gptq / awq / rtn share
    # the layer, so their decode speed is the same: calibration here is small (speed only)
    "rtn4g64": ["quantize:method=rtn,bits=4,group_size=64,sym=true"],
    "rtn4g64a": ["quantize:method=rtn,bits=4,group_size=64,sym=false"],
    "gptq4g64a": [
        "quantize:method=gptq,bits=4,group_size=64,sym=false,"
        "calibration.samples=8,calibration.seq_len=512"
    ],
    "awq4g64a": [
        "quantize:method=awq,bits=4,group_size=64,sym=false,"
        "calibration.samples=8,calibration.seq_len=512"
    ],
    "awq+gptq4g64a": [
        "quantize:method=awq,bits=4,group_size=64,sym=false,rounding=gptq,desc_act=true,"
        "static_groups=true,calibration.samples=8,calibration.seq_len=512"
    ],
}


def decode(model, prompt_ids, n_tokens: int) -> tuple[float, list[int]]:
    """Greedy decode ``n_tokens`` after the prompt; returns (tokens/s excluding prefill, ids)."""
    import torch

    from greenllm._compat import cache_kwargs, output_cache

    with torch.no_grad():
        out = model(input_ids=prompt_ids, use_cache=True)
        past, nxt = output_cache(out), out.logits[:, -1:].argmax(-1)
        toks = []
        t0 = time.perf_counter()
        for _ in range(n_tokens):
            out = model(input_ids=nxt, use_cache=True, **cache_kwargs(model, past))
            past, nxt = output_cache(out), out.logits[:, -1:].argmax(-1)
            toks.append(int(nxt))
        dt = time.perf_counter() - t0
    return n_tokens / dt, toks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--methods", default=",".join(VARIANTS))
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    add_threads_option(ap)
    args = ap.parse_args(argv)
    apply_threads(args)

    import torch

    from greenllm.errors import GreenLLMError
    from greenllm.evals.perplexity import token_perplexity
    from greenllm.models import load_model, model_size_bytes
    from greenllm.steps import compress

    if not WIKITEXT.exists():
        print(f"needs {WIKITEXT} (WikiText-2 test); not found", file=sys.stderr)
        return 2
    base, tok = load_model(args.model)
    text = WIKITEXT.read_text(encoding="utf-8")[: 40 * args.windows * args.seq_len]
    ids = torch.tensor(tok(text)["input_ids"])
    if ids.numel() < args.windows * args.seq_len:
        print("WikiText slice too short for the requested windows", file=sys.stderr)
        return 2
    prompt = torch.tensor([tok(PROMPT)["input_ids"]])
    full = WIKITEXT.read_text(encoding="utf-8")
    calibration = [full[len(full) // 2 :]]  # gptq / awq: never the evaluated tokens

    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    if "fp32" not in names:
        names.insert(0, "fp32")
    models, rows, skipped = {}, {}, {}
    for name in names:
        if name not in VARIANTS:
            print(f"unknown variant {name!r} (known: {', '.join(VARIANTS)})", file=sys.stderr)
            return 2
        m = base if name == "fp32" else copy.deepcopy(base)
        t0 = time.perf_counter()
        try:
            m, _ = compress(m, VARIANTS[name], tokenizer=tok, calibration=calibration)
        except GreenLLMError as exc:
            skipped[name] = str(exc)
            continue
        models[name] = m
        rows[name] = {
            "variant": name,
            "compress_s": time.perf_counter() - t0,
            "size_bytes": model_size_bytes(m),
            "tps": [],
        }
        print(f"prepared {name} in {rows[name]['compress_s']:.1f} s", file=sys.stderr)

    for name, m in list(models.items()):  # warm-up + quality
        try:
            decode(m, prompt, 4)
            rows[name]["perplexity"] = token_perplexity(m, ids, args.seq_len, args.windows)
        except Exception as exc:  # a backend failing at run time: report, keep the others
            skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            del models[name], rows[name]
            continue
        print(f"perplexity {name}: {rows[name]['perplexity']:.3f}", file=sys.stderr)
    ref_tokens = None
    for r in range(args.repeats):  # interleaved timing rounds
        for name, m in models.items():
            tps, toks = decode(m, prompt, args.tokens)
            rows[name]["tps"].append(tps)
            if r == 0:
                if name == "fp32":
                    ref_tokens = toks
                rows[name]["agree"] = sum(a == b for a, b in zip(toks, ref_tokens)) / len(toks)

    ref = rows["fp32"]
    tps_ref = statistics.median(ref["tps"])
    out = []
    print(
        f"\nSmolLM2-135M on CPU ({torch.get_num_threads()} threads), decode {args.tokens} "
        f"tokens x {args.repeats} interleaved repeats (median), perplexity on "
        f"{args.windows}x{args.seq_len} WikiText-2 test tokens\n"
    )
    hdr = (
        f"| {'variant':<24}| {'perplexity':>10} | {'Δppl %':>7} | {'size_bytes':>11} | "
        f"{'size ×':>6} | {'decode tok/s':>12} | {'speed ×':>7} | {'agree':>5} |"
    )
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    for name, row in rows.items():
        tps = statistics.median(row["tps"])
        d_ppl = 100.0 * (row["perplexity"] / ref["perplexity"] - 1.0)
        rec = {
            "variant": name,
            "perplexity": row["perplexity"],
            "delta_ppl_pct": d_ppl,
            "size_bytes": row["size_bytes"],
            "size_ratio": row["size_bytes"] / ref["size_bytes"],
            "decode_tokens_per_s": tps,
            "speedup": tps / tps_ref,
            "agree": row["agree"],
            "tps_all": row["tps"],
            "compress_s": row["compress_s"],
        }
        out.append(rec)
        print(
            f"| {name:<24}| {row['perplexity']:>10.3f} | {d_ppl:>+7.2f} | "
            f"{row['size_bytes']:>11,} | {rec['size_ratio']:>6.3f} | {tps:>12.1f} | "
            f"{rec['speedup']:>7.2f} | {row['agree']:>5.2f} |"
        )
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    ok = [
        r
        for r in out
        if r["variant"] != "fp32"
        and "int8" in r["variant"]
        and r["delta_ppl_pct"] <= 2.0
        and r["speedup"] >= 1.4
    ]
    print(
        "\ngoal (int8, Δppl <= 2 %, decode >= 1.4x fp32): "
        + (", ".join(r["variant"] for r in ok) if ok else "not met in this run")
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": out, "skipped": skipped, "args": vars(args)}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
