"""Compress a model two ways and compare perplexity, size and decode energy with the baseline.

    python examples/compress_and_compare.py                     # SmolLM2-135M (offline copy)
    python examples/compress_and_compare.py --model DIR --tokens 8 --repeats 2

Uses only the public API: load_model, compress, evaluate, bench.
"""

from __future__ import annotations

import argparse
import copy

import greenllm


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    ap.add_argument("--tokens", type=int, default=32, help="new tokens per request")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--meters", default="auto")
    args = ap.parse_args(argv)

    base, tok = greenllm.load_model(args.model)
    variants = {
        "baseline": [],
        "int8_weight": [greenllm.Quantize(method="int8_weight")],
        "wanda50": [
            greenllm.Prune(
                method="wanda",
                sparsity=0.5,
                calibration=greenllm.Calibration(samples=8, seq_len=128),
            )
        ],
    }
    workload = {
        "prompts": "builtin:prompts",
        "max_new_tokens": args.tokens,
        "batch_size": 1,
        "warmup": 1,
        "repeats": args.repeats,
        "limit": 2,
    }
    rows = []
    for name, steps in variants.items():
        model = copy.deepcopy(base)
        if steps:
            model, _ = greenllm.compress(
                model, steps, tokenizer=tok, calibration="builtin:wiki-sample"
            )
        ppl = greenllm.evaluate(model, tok, "perplexity", data="builtin:wiki-sample")
        b = greenllm.bench(model, tok, workload, meters=args.meters)
        rows.append(
            {
                "variant": name,
                "perplexity": ppl.metrics["perplexity"],
                "size_bytes": b.metrics["size_bytes"],
                "decode_tokens_per_s": b.metrics["decode_tokens_per_s"],
                "energy_per_token_j": b.metrics["energy_per_token_j"],
                "estimated": b.estimated,
            }
        )
    base_row = rows[0]
    print(f"{'variant':<12} {'ppl':>8} {'size MB':>8} {'tok/s':>7} {'J/token':>8} {'x energy':>8}")
    for r in rows:
        ratio = r["energy_per_token_j"] / base_row["energy_per_token_j"]
        print(
            f"{r['variant']:<12} {r['perplexity']:>8.2f} {r['size_bytes'] / 1e6:>8.1f} "
            f"{r['decode_tokens_per_s']:>7.1f} {r['energy_per_token_j']:>8.4f} {ratio:>8.2f}"
        )
    if base_row["estimated"]:
        print("energy is a CPU ESTIMATE here (no readable meter): see `greenllm detect`")
    return rows


if __name__ == "__main__":
    main()
