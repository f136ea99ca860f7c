"""``choice``: log-likelihood multiple choice (acc, acc_norm) as lm-eval v0.4.x scores it.

Each choice i is the request (context_i, continuation_i); the prediction is the argmax of the
summed continuation log-likelihoods (``acc``), or of those divided by the character length of
the choice text (``acc_norm``). Standard errors are lm-eval's ``mean_stderr`` (sample std /
sqrt(n)). Requests are scored with the shared-prefix scorer in ``loglik``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from ..config import ConfigError, to_dict
from ..errors import DataError
from .base import EvalSpec, make_result, mean_stderr, progress_bar, resolve_data, sha256_of
from .loglik import Encoder, Request, resolve_max_length, score
from .tasks import ChoiceDoc, first, load_docs

Task = Literal["hellaswag", "mmlu", "winogrande", "arc", "jsonl"]


@dataclass
class ChoiceConfig:
    data: str = "builtin:choice-sample"
    task: Task = "jsonl"
    limit: int | None = None
    shots: int = 0
    batch_size: int = 8
    add_bos_token: bool | None = None
    split: str = "test"  # mmlu: which CSV folder to score
    subjects: list[str] | None = None  # mmlu: restrict to these subjects
    labels: str | None = None  # winogrande: labels file (default <stem>-labels.lst)
    target_delimiter: str = " "  # jsonl: put between context and choice

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit: must be at least 1, got {self.limit}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be at least 1, got {self.batch_size}")
        if self.shots < 0:
            raise ConfigError(f"shots: must be 0 or more, got {self.shots}")
        if self.shots and self.task != "mmlu":
            raise ConfigError(
                f"shots: k-shot prompts are built for mmlu (from its dev split); "
                f"{self.task} runs 0-shot, set shots: 0"
            )
        if self.split not in ("test", "val", "dev"):
            raise ConfigError(f"split: {self.split!r} is not one of 'test', 'val', 'dev'")


def score_docs(
    model: Any,
    encoder: Encoder,
    docs: list[ChoiceDoc],
    *,
    batch_size: int = 8,
    progress: bool = False,
) -> list[list[tuple[float, bool]]]:
    """Log-likelihood (and is-greedy) of every choice of every doc."""
    requests: list[Request] = []
    for i, d in enumerate(docs):
        for ctx, cont in zip(d.contexts, d.continuations):
            c, k = encoder.encode_pair(ctx, cont)
            if not k:
                raise DataError(f"{d.source}: choice {cont!r} encodes to no tokens")
            requests.append(Request(i, tuple(c), tuple(k)))
    max_length = resolve_max_length(model, encoder.tokenizer)
    with progress_bar(len(requests), "choice", progress) as advance:
        flat = score(
            model, requests, batch_size=batch_size, max_length=max_length, progress=advance
        )
    out, pos = [], 0
    for d in docs:
        out.append(flat[pos : pos + len(d.continuations)])
        pos += len(d.continuations)
    return out


def choice_metrics(docs: list[ChoiceDoc], scores: list[list[tuple[float, bool]]]) -> dict:
    acc, acc_norm = [], []
    for d, s in zip(docs, scores):
        lls = [ll for ll, _ in s]
        pred = max(range(len(lls)), key=lambda i: (lls[i], -i))
        norm = [ll / float(len(t)) if len(t) else float("-inf") for ll, t in zip(lls, d.norm_texts)]
        pred_norm = max(range(len(norm)), key=lambda i: (norm[i], -i))
        acc.append(1.0 if pred == d.label else 0.0)
        acc_norm.append(1.0 if pred_norm == d.label else 0.0)
    n = len(docs)
    return {
        "acc": sum(acc) / n,
        "acc_stderr": mean_stderr(acc),
        "acc_norm": sum(acc_norm) / n,
        "acc_norm_stderr": mean_stderr(acc_norm),
    }


def choice_docs(cfg: ChoiceConfig, path: Any) -> list:
    """The first ``cfg.limit`` documents of the task's file, formatted as ``cfg`` says."""
    return first(
        load_docs(
            cfg.task,
            path,
            shots=cfg.shots,
            split=cfg.split,
            subjects=cfg.subjects,
            labels=cfg.labels,
            target_delimiter=cfg.target_delimiter,
        ),
        cfg.limit,
    )


def run(model: Any, tokenizer: Any, cfg: ChoiceConfig, *, progress: bool = False):
    t0 = time.perf_counter()
    path = resolve_data(cfg.data)
    docs = choice_docs(cfg, path)
    if not docs:
        raise DataError(f"{path}: no items to evaluate (empty file or folder)")
    encoder = Encoder(tokenizer, cfg.add_bos_token)
    scores = score_docs(model, encoder, docs, batch_size=cfg.batch_size, progress=progress)
    metrics = choice_metrics(docs, scores)
    settings = {
        **to_dict(cfg),
        **encoder.settings(),
        "data_file": str(path),
        "data_sha256": sha256_of(path),
        "scoring": "loglikelihood, shared prefix",
    }
    return make_result(
        cfg.task if cfg.task != "jsonl" else "choice", len(docs), metrics, t0, settings
    )


SPEC = EvalSpec(
    "choice",
    ChoiceConfig,
    run,
    "multiple choice by log-likelihood: acc, acc_norm (hellaswag, mmlu, winogrande, "
    "arc, generic JSONL)",
)
