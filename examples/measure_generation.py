"""Measure the energy of a model generating text, and print joules per generated token.

    python examples/measure_generation.py                       # SmolLM2-135M (offline copy)
    python examples/measure_generation.py --model path/to/dir --tokens 16

On a machine with no readable energy counter the report is a labelled CPU estimate.
"""

from __future__ import annotations

import argparse

import greenllm


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    ap.add_argument("--prompt", default="Energy efficiency matters for language models because")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--meters", default="auto")
    args = ap.parse_args(argv)

    import torch

    model, tok = greenllm.load_model(args.model)
    ids = tok(args.prompt, return_tensors="pt")
    meters = args.meters if args.meters == "auto" else args.meters.split(",")
    with torch.no_grad(), greenllm.measure(meters, hz=10.0) as m:
        out = model.generate(
            **ids,
            max_new_tokens=args.tokens,
            min_new_tokens=args.tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
    report = m.report
    new_tokens = out.shape[1] - ids.input_ids.shape[1]
    print(tok.decode(out[0, ids.input_ids.shape[1] :], skip_special_tokens=True))
    kind = "ESTIMATE" if report.estimated else "measured"
    print(
        f"{new_tokens} tokens in {report.duration_s:.2f} s, {report.energy_j:.2f} J ({kind}, "
        f"meters: {', '.join(report.meters)}) -> {report.energy_j / new_tokens:.4f} J/token"
    )
    return {
        "new_tokens": int(new_tokens),
        "energy_j": report.energy_j,
        "estimated": report.estimated,
    }


if __name__ == "__main__":
    main()
