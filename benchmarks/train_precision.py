"""SmolLM2-135M training steps on this CPU: fixed fp32, fixed bf16 autocast and progressive
precision (``--progressive``, default bf16 for the first half of the steps, then fp32).

Each precision trains a fresh copy of the model for ``--warmup`` unmeasured steps, then
``--steps`` measured optimizer steps (AdamW, full fine-tuning, ``--batch-size`` x ``--seq-len``
tokens of WikiText-2 text) through greenllm's shared training loop, inside
``greenllm.measure(meters=...)``. The table gives seconds and joules per step and the ratio
against fp32 measured in the same run, plus this process's CPU seconds per step (less
sensitive to other jobs than wall time), and the loss on ``--eval-batches`` held-out batches
(fp32, after training). One run: on a shared machine the numbers are noisy.

Energy comes from ``--meter`` (default ``estimate``: CPU power modelled from TDP and
utilisation, labelled as an estimate; use ``auto`` or ``rapl`` where counters exist).

    python benchmarks/train_precision.py [--steps 4] [--warmup 1] [--batch-size 2]
                                         [--seq-len 128] [--meter estimate]
                                         [--precisions fp32 bf16 progressive]
                                         [--progressive bf16:0.5,fp32] [--eval-batches 4]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

from _shared import WIKITEXT_TEST as WIKI
from _shared import add_threads_option, apply_threads


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--meter", default="estimate")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "progressive"])
    ap.add_argument("--progressive", default="bf16:0.5,fp32", help="the precision schedule")
    ap.add_argument("--eval-batches", type=int, default=4, help="held-out batches")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--text", default=None, help="training text file (default: WikiText-2)")
    add_threads_option(ap)
    args = ap.parse_args(argv)
    apply_threads(args)

    import torch

    from greenllm.measure import measure
    from greenllm.models import load_model
    from greenllm.steps.data import build_batches
    from greenllm.steps.train import TrainLoopConfig, causal_lm_loss, evaluate_loss, train_loop

    base, tok = load_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    text = Path(args.text) if args.text else WIKI
    source = [text.read_text()[:400_000]] if text.exists() else "builtin:wiki-sample"
    n = args.warmup + args.steps
    batches, _ = build_batches(
        tok,
        source,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        max_examples=(n + args.eval_batches) * args.batch_size,
    )
    held_out = batches[n : n + args.eval_batches]
    batches = batches[:n]
    if len(batches) < n or len(held_out) < args.eval_batches:
        print(f"not enough text for {n} batches", file=sys.stderr)
        return 2
    meters = args.meter if args.meter == "auto" else args.meter.split(",")
    base.eval()
    held_before = evaluate_loss(base, held_out, causal_lm_loss) if held_out else float("nan")
    rows = []
    for prec in args.precisions:
        model = copy.deepcopy(base)
        schedule = args.progressive if prec == "progressive" else None
        cfg = TrainLoopConfig(
            lr=args.lr,
            precision="fp32" if schedule else prec,
            precision_schedule=schedule,
            shuffle=False,
            log_every_steps=10**6,
        )
        if args.warmup:
            train_loop(  # warm-up in the first phase's precision
                model,
                batches[: args.warmup],
                causal_lm_loss,
                TrainLoopConfig(
                    **{
                        **cfg.__dict__,
                        "max_steps": args.warmup,
                        "precision": schedule.split(":")[0] if schedule else prec,
                        "precision_schedule": None,
                    }
                ),
            )
        cpu0 = time.process_time()
        with measure(meters, hz=10.0) as m:
            rep = train_loop(
                model,
                batches[args.warmup : n],
                causal_lm_loss,
                TrainLoopConfig(**{**cfg.__dict__, "max_steps": args.steps}),
            )
        cpu_s = time.process_time() - cpu0
        r = m.report
        model.eval()
        held = evaluate_loss(model, held_out, causal_lm_loss) if held_out else float("nan")
        rows.append(
            {
                "precision": f"progressive {schedule}" if schedule else prec,
                "steps": rep.steps,
                "tokens": rep.tokens,
                "cpu_s_per_step": cpu_s / rep.steps,
                "s_per_step": r.duration_s / rep.steps,
                "j_per_step": r.energy_j / rep.steps,
                "mean_power_w": r.mean_power_w,
                "estimated": r.estimated,
                "first_loss": rep.first_loss,
                "last_loss": rep.last_loss,
                "held_out_loss": held,
            }
        )
        del model
    ref = rows[0]
    print(
        f"SmolLM2-135M training, batch {args.batch_size} x {args.seq_len} tokens, "
        f"{args.steps} measured steps after {args.warmup} warm-up, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, meter {args.meter}, lr "
        f"{args.lr:g}; held-out loss before training {held_before:.5f} "
        f"({len(held_out)} batches)"
    )
    print(
        "| precision | s/step | CPU s/step | J/step | mean W | time vs fp32 | "
        "CPU time vs fp32 | energy vs fp32 | train loss first -> last | held-out loss |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for row in rows:
        label = " (estimate)" if row["estimated"] else ""
        print(
            f"| {row['precision']} | {row['s_per_step']:.3f} | {row['cpu_s_per_step']:.3f} | "
            f"{row['j_per_step']:.2f}{label} | {row['mean_power_w']:.1f} | "
            f"{row['s_per_step'] / ref['s_per_step']:.2f}x | "
            f"{row['cpu_s_per_step'] / ref['cpu_s_per_step']:.2f}x | "
            f"{row['j_per_step'] / ref['j_per_step']:.2f}x | "
            f"{row['first_loss']:.3f} -> {row['last_loss']:.3f} | {row['held_out_loss']:.5f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
