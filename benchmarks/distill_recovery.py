"""Distillation demo on SmolLM2-135M: a layer-dropped student recovers part of the gap.

The student is SmolLM2 with every ``--drop-every``-th decoder layer removed (default 5: 30 ->
24 layers). It is distilled from the full model (T^2-scaled KL on temperature-softened logits
plus ``--alpha-ce`` cross-entropy) for ``--steps`` optimizer steps through the ``distill`` step.
Perplexity is exp(mean next-token loss) over ``--eval-blocks`` blocks of ``--seq-len`` tokens
from the END of WikiText-2 test (../shared/data/wikitext/wiki.test.raw); training text comes
from its START, so evaluation text is never trained on. "Gap recovered" is measured on loss
(log perplexity): (student_before - student_after) / (student_before - teacher).

    python benchmarks/distill_recovery.py [--steps 40] [--drop-every 5] [--batch-size 4]
                                          [--seq-len 128] [--eval-blocks 16] [--lr 1e-4]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from _shared import WIKITEXT_TEST as WIKI
from _shared import add_threads_option, apply_threads


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--drop-every", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--eval-blocks", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--alpha-ce", type=float, default=0.5)
    ap.add_argument("--precision", default="fp32")
    add_threads_option(ap)
    args = ap.parse_args(argv)
    apply_threads(args)
    if not WIKI.exists():
        print(f"{WIKI} is absent: this demo needs WikiText-2 test beside the repo", file=sys.stderr)
        return 2

    from greenllm.models import load_model, param_count
    from greenllm.steps import StepContext, apply_step
    from greenllm.steps.data import build_batches
    from greenllm.steps.distill import drop_layers, num_layers
    from greenllm.steps.train import causal_lm_loss, evaluate_loss

    teacher, tok = load_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    text = WIKI.read_text()
    cut = int(len(text) * 0.7)
    train_text, eval_text = text[:cut], text[cut:]
    eval_b, _ = build_batches(
        tok, [eval_text], seq_len=args.seq_len, batch_size=4, max_examples=args.eval_blocks
    )
    n_layers = num_layers(teacher)
    keep = [i for i in range(n_layers) if i % args.drop_every != args.drop_every - 1]

    def ppl(model) -> tuple[float, float]:
        loss = evaluate_loss(model, eval_b, causal_lm_loss)
        return loss, math.exp(loss)

    t_loss, t_ppl = ppl(teacher)
    before = drop_layers(teacher, keep)
    b_loss, b_ppl = ppl(before)
    del before
    cfg = {
        "student": {"layers": keep},
        "data": [train_text],
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "max_steps": args.steps,
        "epochs": 1,
        "lr": args.lr,
        "warmup_ratio": 0.1,
        "temperature": args.temperature,
        "alpha_ce": args.alpha_ce,
        "precision": args.precision,
        "max_examples": args.steps * args.batch_size,
        "log_every_steps": 10,
    }
    t0 = time.perf_counter()
    student, res = apply_step(teacher, "distill", cfg, StepContext(tokenizer=tok, teacher=teacher))
    train_s = time.perf_counter() - t0
    a_loss, a_ppl = ppl(student)
    recovered = (b_loss - a_loss) / (b_loss - t_loss) if b_loss > t_loss else float("nan")
    print(
        f"SmolLM2-135M, {n_layers} -> {len(keep)} layers (drop every {args.drop_every}th), "
        f"{res.stats['steps']} distillation steps of {args.batch_size} x {args.seq_len} tokens "
        f"in {train_s:.0f} s ({args.precision}, T={args.temperature}, alpha_ce={args.alpha_ce}); "
        f"perplexity on {len(eval_b) * 4} held-out blocks of {args.seq_len} tokens"
    )
    print("| model | layers | params | perplexity | loss |")
    print("|---|---:|---:|---:|---:|")
    print(f"| teacher | {n_layers} | {param_count(teacher):,} | {t_ppl:.2f} | {t_loss:.4f} |")
    print(
        f"| student, layers dropped | {len(keep)} | {param_count(student):,} | {b_ppl:.2f} | "
        f"{b_loss:.4f} |"
    )
    print(
        f"| student, distilled | {len(keep)} | {param_count(student):,} | {a_ppl:.2f} | "
        f"{a_loss:.4f} |"
    )
    print(
        f"gap recovered (log-perplexity): {100 * recovered:.1f} %; distillation loss "
        f"{res.stats['first_loss']:.3f} -> {res.stats['last_loss']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
