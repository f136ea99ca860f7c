"""One GGUF file three ways: llama.cpp in process (llama-cpp-python), llama.cpp's llama-server
binary as a runtime, and llama.cpp's llama-bench inside greenllm's energy window.

    python benchmarks/llama_binaries.py --gguf smol-q8.gguf [--threads 1] [--tokens 64]
        [--prompts 4] [--rounds 3] [--repetitions 5] [--prompt-tokens 0] [--json out.json]

The binaries come from GREENLLM_LLAMA_BENCH / GREENLLM_LLAMA_SERVER, PATH or ``make
llama-tools``. Each round runs the three in turn (interleaved, so load drifts hit them alike);
the table gives medians over rounds:
  in process / llama-server  greenllm.bench (greedy, batch 1, EOS ignored, --tokens new tokens
                      for each of the first --prompts builtin prompts, one window per round):
                      decode tok/s by greenllm's clock, and by the runtime's own counters over
                      the same requests (llama_perf_context t_eval / the server's predicted_ms);
  llama-bench         llama_bench(): an untimed warm-up invocation, then ``-p --prompt-tokens
                      -n --tokens -r --repetitions`` in one metered window: llama-bench's
                      avg_ts of tg, and greenllm's generated tokens / window duration (model
                      load included);
  J/token             the energy meter (``auto``: the labelled estimate where there is no RAPL),
                      per generated token.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from _shared import decode_workload


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--gguf", required=True, help="the GGUF file (greenllm export ... --format gguf)"
    )
    ap.add_argument("--threads", type=int, default=1, help="threads of every runtime")
    ap.add_argument(
        "--tokens", type=int, default=64, help="new tokens per request / llama-bench -n"
    )
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repetitions", type=int, default=5, help="llama-bench -r")
    ap.add_argument("--prompt-tokens", type=int, default=0, help="llama-bench -p (0: tg only)")
    ap.add_argument("--json", default=None, help="write every number here")
    args = ap.parse_args(argv)

    from greenllm.bench import bench
    from greenllm.runtimes import load_for_runtime, open_runtime
    from greenllm.runtimes.llamabench import llama_bench

    path, tok = load_for_runtime("llama.cpp", args.gguf)
    inproc = open_runtime("llama.cpp", path, threads=args.threads)[0]
    server = open_runtime("llama-server", path, threads=args.threads)[0]
    wl = decode_workload(args.prompts, args.tokens, args.threads)
    rows: dict[str, dict[str, list[float]]] = {
        k: {} for k in ("llama.cpp in process", "llama-server", "llama-bench")
    }

    def add(name: str, **vals: float) -> None:
        for k, v in vals.items():
            rows[name].setdefault(k, []).append(v)

    info = {}
    try:
        for r in range(args.rounds):
            for name, rt in (("llama.cpp in process", inproc), ("llama-server", server)):
                rt.timings.clear()
                res = bench(rt, tok, wl, meters="auto", hz=10.0)
                t = rt.timings[1:]  # the timed requests (the first is the warm-up)
                if name == "llama-server":
                    own = sum(x["server_predicted_n"] for x in t) / (
                        sum(x["server_predicted_ms"] for x in t) / 1e3
                    )
                else:
                    own = sum(x["n_eval"] for x in t) / (sum(x["t_eval_ms"] for x in t) / 1e3)
                add(
                    name,
                    decode_tok_s=res.metrics["decode_tokens_per_s"],
                    own_tok_s=own,
                    j_per_token=res.metrics["energy_per_token_j"],
                )
                info[name] = {"meter": res.meter, **rt.info()}
                print(
                    f"# round {r + 1} {name}: {res.metrics['decode_tokens_per_s']:.1f} tok/s",
                    file=sys.stderr,
                )
            lb = llama_bench(
                path,
                n_prompt=args.prompt_tokens,
                n_gen=args.tokens,
                threads=args.threads,
                repetitions=args.repetitions,
                meters="auto",
            )
            add(
                "llama-bench",
                own_tok_s=lb["gen_tokens_per_s"],
                decode_tok_s=lb["window_gen_tokens_per_s"],
                j_per_token=lb["energy_per_token_j"],
            )
            info["llama-bench"] = {k: v for k, v in lb.items() if k not in ("energy", "tests")}
            print(
                f"# round {r + 1} llama-bench: {lb['gen_tokens_per_s']:.1f} tok/s", file=sys.stderr
            )
    finally:
        inproc.close()
        server.close()

    med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in rows.items()}
    print("| runtime | greenllm tok/s | runtime's own tok/s | greenllm / own | J/token (meter) |")
    print("|---|---|---|---|---|")
    for name, m in med.items():
        meter = info[name].get("meter", "?")
        print(
            f"| {name} | {m['decode_tok_s']:.1f} | {m['own_tok_s']:.1f} | "
            f"{m['decode_tok_s'] / m['own_tok_s']:.3f} | {m['j_per_token']:.4f} ({meter}) |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {"args": vars(args), "rounds": rows, "median": med, "info": info},
                f,
                indent=2,
                default=str,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
