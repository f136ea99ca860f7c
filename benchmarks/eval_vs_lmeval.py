"""greenllm's evaluator vs lm-evaluation-harness on the same model and the same items.

    python benchmarks/eval_vs_lmeval.py [--n 200] [--repeats 3] [--batch-size 8]
                                        [--tasks hellaswag,mmlu,winogrande] [--mmlu-shots 0]

For each task the same documents (read from ../shared/data, or --data-root) are turned into the
same (context, continuation) requests. lm-eval scores them through its own
``HFLM.loglikelihood`` on the in-memory SmolLM2-135M (lm-eval ``Instance`` objects built
directly, so no hub or network is needed); greenllm scores them with its shared-prefix scorer.
Both run in this process with the same batch size, alternating (lm-eval, greenllm) ``--repeats``
times per task; the table gives the median wall time of each side (a warm-up pass of each
comes first and is not counted). Prints wall time, the speed ratio, accuracy from each,
the accuracy difference in percentage points and the largest log-likelihood difference.
Goal: >= 2x faster, accuracy within 0.5 pp.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _shared import SHARED_DATA

FILES = {
    "hellaswag": "hellaswag/hellaswag_val_full.txt",
    "mmlu": "mmlu",
    "winogrande": "winogrande/dev.jsonl",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    ap.add_argument("--n", type=int, default=200, help="items per task")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each side (median)")
    ap.add_argument("--tasks", default="hellaswag,mmlu,winogrande")
    ap.add_argument("--mmlu-shots", type=int, default=0)
    ap.add_argument("--data-root", default=str(SHARED_DATA))
    args = ap.parse_args()

    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from greenllm.evals.choice import choice_metrics, score_docs
    from greenllm.evals.loglik import Encoder
    from greenllm.evals.tasks import first, load_docs
    from greenllm.models import load_model

    root = Path(args.data_root)
    model, tok = load_model(args.model)
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size)
    enc = Encoder(tok)
    rows = []
    tot = {"g": 0.0, "l": 0.0}
    for task in args.tasks.split(","):
        path = root / FILES[task]
        if not path.exists():
            print(f"skip {task}: {path} is absent")
            continue
        docs = first(load_docs(task, path, shots=args.mmlu_shots if task == "mmlu" else 0), args.n)
        pairs = [(c, k) for d in docs for c, k in zip(d.contexts, d.continuations)]
        reqs = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]
        if not rows:  # warm-up: first-call costs (thread pools, allocator) count for no one
            lm.loglikelihood(reqs[:16], disable_tqdm=True)
            score_docs(model, enc, docs[:4], batch_size=args.batch_size)
        t_ls, t_gs = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            theirs = lm.loglikelihood(reqs, disable_tqdm=True)
            t_ls.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ours = score_docs(model, enc, docs, batch_size=args.batch_size)
            t_gs.append(time.perf_counter() - t0)
        t_l, t_g = statistics.median(t_ls), statistics.median(t_gs)
        grouped, pos = [], 0
        for d in docs:
            grouped.append(theirs[pos : pos + len(d.continuations)])
            pos += len(d.continuations)
        m_g, m_l = choice_metrics(docs, ours), choice_metrics(docs, grouped)
        flat_ours = [ll for s in ours for ll, _ in s]
        dmax = max(abs(a - b) for a, (b, _) in zip(flat_ours, theirs))
        tot["g"] += t_g
        tot["l"] += t_l
        rows.append(
            (
                task,
                len(docs),
                len(pairs),
                t_l,
                t_g,
                t_l / t_g,
                m_l["acc"],
                m_g["acc"],
                100 * (m_g["acc"] - m_l["acc"]),
                100 * (m_g["acc_norm"] - m_l["acc_norm"]),
                dmax,
            )
        )
        print(
            f"done {task}: lm-eval {' '.join(f'{t:.1f}' for t in t_ls)} s, "
            f"greenllm {' '.join(f'{t:.1f}' for t in t_gs)} s",
            flush=True,
        )
    head = (
        "task",
        "items",
        "requests",
        "lm-eval s",
        "greenllm s",
        "speedup",
        "acc lm-eval",
        "acc greenllm",
        "Δacc pp",
        "Δacc_norm pp",
        "max |Δll|",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(
            f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.1f} | {r[5]:.2f}x | "
            f"{r[6]:.4f} | {r[7]:.4f} | {r[8]:+.2f} | {r[9]:+.2f} | {r[10]:.1e} |"
        )
    if rows:
        print(
            f"| total | | | {tot['l']:.1f} | {tot['g']:.1f} | {tot['l'] / tot['g']:.2f}x | "
            f"| | | | |"
        )
    print(
        f"model={args.model} batch_size={args.batch_size} mmlu_shots={args.mmlu_shots} "
        f"repeats={args.repeats}; median wall times on this machine (noisy if it is shared)"
    )


if __name__ == "__main__":
    main()
