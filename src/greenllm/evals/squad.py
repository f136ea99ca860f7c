"""``squad``: extractive QA by greedy generation; EM and F1 as the official SQuAD v1.1 script.

Prompt (as lm-eval's SQuAD prompts): ``"Title: {title}\\n\\nBackground: {context}\\n\\n"
"Question: {question}\\n\\nAnswer:"``; the model generates greedily until a newline or
``max_new_tokens``. The answer is normalised (lower case, punctuation removed, articles
a/an/the removed, whitespace collapsed); EM and token F1 take the max over the gold answers
and are reported as fractions (0..1), like acc.
"""

from __future__ import annotations

import json
import re
import string
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, to_dict
from ..errors import DataError
from ..grad_mode import no_autograd
from .base import EvalSpec, make_result, mean_stderr, progress_bar, resolve_data, sha256_of
from .loglik import Encoder, resolve_max_length

PROMPT = "Title: {title}\n\nBackground: {context}\n\nQuestion: {question}\n\nAnswer:"


@dataclass
class SquadConfig:
    data: str = "builtin:squad-sample"
    limit: int | None = None
    max_new_tokens: int = 32
    batch_size: int = 8
    add_bos_token: bool | None = None

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit: must be at least 1, got {self.limit}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens: must be at least 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class QA:
    qid: str
    title: str
    context: str
    question: str
    answers: tuple[str, ...]


def normalize_answer(s: str) -> str:
    """Official SQuAD v1.1 normalisation."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1_score(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def best_over(metric, prediction: str, truths: tuple[str, ...]) -> float:
    return max(metric(prediction, t) for t in truths)


def load_squad(path: Path) -> list[QA]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise DataError(f'{path}: not SQuAD v1.1 JSON; expected {{"version", "data": [articles]}}')
    out = []
    for a, art in enumerate(obj["data"]):
        where = f"{path}: data[{a}]"
        if not isinstance(art, dict) or not isinstance(art.get("paragraphs"), list):
            raise DataError(f"{where}: missing 'paragraphs' list")
        for p, para in enumerate(art["paragraphs"]):
            w = f"{where}.paragraphs[{p}]"
            if not isinstance(para, dict) or not isinstance(para.get("context"), str):
                raise DataError(f"{w}: missing 'context' text")
            for q, qa in enumerate(para.get("qas") or []):
                wq = f"{w}.qas[{q}]"
                if not isinstance(qa, dict) or not isinstance(qa.get("question"), str):
                    raise DataError(f"{wq}: missing 'question' text")
                answers = tuple(
                    x.get("text")
                    for x in qa.get("answers") or []
                    if isinstance(x, dict) and isinstance(x.get("text"), str)
                )
                if not answers:
                    raise DataError(
                        f"{wq}: no gold answers (SQuAD v2 unanswerable questions "
                        f"are not scored; give v1.1 data)"
                    )
                out.append(
                    QA(
                        str(qa.get("id", f"{a}.{p}.{q}")),
                        str(art.get("title", "")),
                        para["context"],
                        qa["question"],
                        answers,
                    )
                )
    return out


def generate_answers(
    model: Any,
    encoder: Encoder,
    prompts: list[str],
    *,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    advance=lambda n: None,
) -> list[str]:
    """Greedy continuation of every prompt, cut at the first newline (left-padded batches)."""
    import torch

    tok = encoder.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    max_len = resolve_max_length(model, tok)
    device = next(model.parameters()).device
    encoded = [encoder.encode(p)[-(max_len - max_new_tokens) :] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    with no_autograd(model):
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[r, width - len(encoded[i]) :] = 1
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                stop_strings=["\n"],
                tokenizer=tok,
            )
            for r, i in enumerate(idx):
                text = tok.decode(gen[r, width:], skip_special_tokens=True)
                out[i] = text.split("\n")[0].strip()
            advance(len(idx))
    return out


def run(model: Any, tokenizer: Any, cfg: SquadConfig, *, progress: bool = False):
    t0 = time.perf_counter()
    path = resolve_data(cfg.data)
    items = load_squad(path)[: cfg.limit] if cfg.limit else load_squad(path)
    if not items:
        raise DataError(f"{path}: no questions to evaluate")
    encoder = Encoder(tokenizer, cfg.add_bos_token)
    prompts = [PROMPT.format(title=q.title, context=q.context, question=q.question) for q in items]
    with progress_bar(len(items), "squad", progress) as advance:
        preds = generate_answers(
            model,
            encoder,
            prompts,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size,
            advance=advance,
        )
    em = [best_over(exact_match, p, q.answers) for p, q in zip(preds, items)]
    f1 = [best_over(f1_score, p, q.answers) for p, q in zip(preds, items)]
    metrics = {
        "em": sum(em) / len(em),
        "em_stderr": mean_stderr(em),
        "f1": sum(f1) / len(f1),
        "f1_stderr": mean_stderr(f1),
    }
    settings = {
        **to_dict(cfg),
        **encoder.settings(),
        "data_file": str(path),
        "data_sha256": sha256_of(path),
        "prompt": PROMPT,
        "decoding": "greedy",
        "examples": [{"id": q.qid, "prediction": p} for q, p in list(zip(items, preds))[:5]],
    }
    return make_result("squad", len(items), metrics, t0, settings)


SPEC = EvalSpec("squad", SquadConfig, run, "extractive QA by greedy generation: EM, F1")
