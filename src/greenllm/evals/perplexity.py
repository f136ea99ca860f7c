"""``perplexity``: lm-eval's ``loglikelihood_rolling`` over documents, with its WikiText metrics.

Each document is tokenised whole and cut into windows of ``max_length`` tokens whose first
input is the prefix token (BOS, else EOS), as lm-eval does; by default windows do not overlap
(every token is predicted once, lm-eval's ``context_len=1``). With ``stride`` S < max_length each
later window predicts S new tokens and sees ``max_length - S`` earlier ones.

Metrics (sum over documents of the log-likelihood LL, natural log):
  perplexity      = exp(-LL / tokens predicted)
  word_perplexity = exp(-LL / words),  words = len(re.split(r"\\s+", doc))
  byte_perplexity = exp(-LL / bytes),  bytes = len(doc.encode("utf-8"))
  bits_per_byte   = -LL / bytes / ln 2
For WikiText files the words and bytes are counted on the original text and the model scores
lm-eval's detokenised text, as lm-eval's ``wikitext`` task does.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any, Literal

from ..config import ConfigError, to_dict
from ..errors import DataError
from .base import EvalSpec, make_result, progress_bar, resolve_data, sha256_of
from .loglik import Encoder, Request, resolve_max_length, rolling_windows, score

_HEADING = re.compile(r"^ = [^=].* = $")


@dataclass
class PerplexityConfig:
    data: str = "builtin:wiki-sample"
    format: Literal["auto", "text", "wikitext", "lines"] = "auto"
    text_field: str = "text"  # datasets input: the column holding the text
    limit: int | None = None  # at most this many documents
    max_length: int | None = None  # window length in tokens (default: the model's)
    stride: int | None = None  # new tokens per later window (default: max_length)
    batch_size: int = 4
    add_bos_token: bool | None = None

    def validate(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit: must be at least 1, got {self.limit}")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"max_length: must be at least 2 tokens, got {self.max_length}")
        if self.stride is not None and self.stride < 1:
            raise ConfigError(f"stride: must be at least 1, got {self.stride}")
        if self.stride and self.max_length and self.stride > self.max_length:
            raise ConfigError(
                f"stride: {self.stride} is larger than max_length "
                f"{self.max_length}; use at most max_length"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class Document:
    original: str  # words and bytes are counted here
    scored: str  # the text the model scores


def wikitext_detokenizer(string: str) -> str:
    """lm-eval's ``wikitext_detokenizer`` (undoes WikiText's tokenisation artefacts)."""
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    string = string.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    for p in (":", ";", ".", "!", "?", ","):
        string = string.replace(f" {p} ", f"{p} ")
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    string = string.replace("= = = =", "====").replace("= = =", "===").replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n").replace("\n ", "\n")
    string = string.replace(" N ", " 1 ").replace(" 's", "'s")
    return string


def is_wikitext_title(line: str) -> bool:
    """A top-level WikiText heading (`` = Title = ``), the rule lm-eval's ``wikitext`` data
    (EleutherAI/wikitext_document_level) splits articles at: with the level-2/3 markers
    ``= =`` / ``= = =`` closed up, the stripped line starts with ``"= "`` and ends with
    ``" ="``."""
    closed = line.replace("= = =", "===").replace("= =", "==").strip()
    return closed.startswith("= ") and closed.endswith(" =")


def split_wikitext(text: str) -> list[str]:
    """A WikiText file -> one string per article, as lm-eval's ``wikitext`` documents.

    Every line is kept, blank ones included (in ``wiki.test.raw`` a blank line is ``" "``): an
    article is its heading line and every line up to the next top-level heading, joined by
    ``"\n"``. A part before the first heading is kept unless it is only whitespace; the last
    article runs to the end of the text (so ends in ``"\n"`` when the file does). CRLF and CR
    line ends are read as LF, as Python's text mode does when that data is built."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    docs: list[str] = []
    lines: list[str] = []
    for line in text.split("\n"):
        if is_wikitext_title(line):
            page = "\n".join(lines)
            if page.strip():
                docs.append(page)
            lines = []
        lines.append(line)
    docs.append("\n".join(lines))
    return docs


def load_documents(
    data: Any, fmt: str = "auto", text_field: str = "text"
) -> tuple[list[Document], dict]:
    """Documents from a path/builtin, a list of strings, or a datasets dataset."""
    if isinstance(data, str):
        path = resolve_data(data)
        if path.is_dir():
            raise DataError(f"data: {path} is a folder; give a text file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if fmt == "auto":
            fmt = "wikitext" if any(_HEADING.match(ln) for ln in text.splitlines()[:50]) else "text"
        if fmt == "wikitext":
            docs = [Document(d, wikitext_detokenizer(d)) for d in split_wikitext(text) if d.strip()]
        elif fmt == "lines":
            docs = [Document(ln, ln) for ln in text.splitlines() if ln.strip()]
        else:
            docs = [Document(text, text)] if text.strip() else []
        info = {"data_file": str(path), "data_sha256": sha256_of(path), "format": fmt}
    elif isinstance(data, (list, tuple)):
        docs = [Document(str(t), str(t)) for t in data if str(t).strip()]
        info = {"data_file": "<list>", "format": "list"}
    elif hasattr(data, "column_names"):
        if text_field not in data.column_names:
            raise DataError(
                f"text_field: the dataset has no column {text_field!r} "
                f"(columns: {', '.join(data.column_names)})"
            )
        docs = [Document(t, t) for t in data[text_field] if t and t.strip()]
        info = {
            "data_file": f"<datasets:{getattr(data, '_fingerprint', '')}>",
            "format": "datasets",
        }
    else:
        raise DataError(
            f"data: expected a path, builtin:<name>, a list of strings or a "
            f"datasets dataset, got {type(data).__name__}"
        )
    if not docs:
        raise DataError(f"data: {info['data_file']} holds no text to score")
    return docs, info


def token_perplexity(model: Any, ids: Any, window: int, windows: int | None = None) -> float:
    """exp(mean NLL) over non-overlapping ``window``-token windows of a fixed token slice.

    For comparing variants of one model on the same tokens (benchmarks, integration tests):
    ``ids`` is 1-D or ``[1, n]``; each window predicts its tokens 2..k from the ones before, a
    trailing window of fewer than 2 tokens is dropped, ``windows`` caps how many are used. It
    runs under ``no_grad`` rather than ``inference_mode`` (quanto's int4 tensors refuse the
    latter). The ``perplexity`` evaluator, with lm-eval's document semantics, is ``run``.
    """
    import torch

    ids = ids.reshape(-1)
    nll, count = 0.0, 0
    with torch.no_grad():
        for n, start in enumerate(range(0, ids.numel(), window)):
            chunk = ids[start : start + window].unsqueeze(0)
            if (windows is not None and n >= windows) or chunk.shape[1] < 2:
                break
            logits = model(input_ids=chunk).logits.float()
            nll += float(
                torch.nn.functional.cross_entropy(logits[0, :-1], chunk[0, 1:], reduction="sum")
            )
            count += chunk.shape[1] - 1
    if count == 0:
        raise DataError(f"token_perplexity: need at least 2 tokens, got {ids.numel()}")
    return math.exp(nll / count)


def perplexity_metrics(total_ll: float, n_tokens: int, n_words: int, n_bytes: int) -> dict:
    return {
        "perplexity": math.exp(-total_ll / n_tokens),
        "word_perplexity": math.exp(-total_ll / n_words),
        "byte_perplexity": math.exp(-total_ll / n_bytes),
        "bits_per_byte": -total_ll / n_bytes / math.log(2),
        "loglikelihood": total_ll,
        "tokens": n_tokens,
        "words": n_words,
        "bytes": n_bytes,
    }


def run(
    model: Any, tokenizer: Any, cfg: PerplexityConfig, data: Any = None, *, progress: bool = False
):
    """Score documents; ``data`` (a list or datasets dataset) overrides ``cfg.data``."""
    t0 = time.perf_counter()
    docs, info = load_documents(cfg.data if data is None else data, cfg.format, cfg.text_field)
    docs = docs[: cfg.limit] if cfg.limit else docs
    encoder = Encoder(tokenizer, cfg.add_bos_token)
    max_len = cfg.max_length or resolve_max_length(model, tokenizer)
    stride = cfg.stride or max_len
    if stride > max_len:
        raise ConfigError(f"stride: {stride} is larger than the {max_len}-token window")
    requests: list[Request] = []
    n_tokens = 0
    for d in docs:
        toks = encoder.encode(d.scored)
        n_tokens += len(toks)
        for ctx, pred in rolling_windows(
            toks, encoder.prefix_token_id, max_len, context_len=max_len - stride + 1
        ):
            requests.append(Request(len(requests), tuple(ctx), tuple(pred)))
    if not requests:
        raise DataError(f"data: {info['data_file']} encodes to no tokens")
    with progress_bar(len(requests), "perplexity", progress) as advance:
        scores = score(
            model, requests, batch_size=cfg.batch_size, max_length=max_len, progress=advance
        )
    total_ll = sum(ll for ll, _ in scores)
    n_words = sum(len(re.split(r"\s+", d.original)) for d in docs)
    n_bytes = sum(len(d.original.encode("utf-8")) for d in docs)
    metrics = perplexity_metrics(total_ll, n_tokens, n_words, n_bytes)
    settings = {
        **to_dict(cfg),
        **encoder.settings(),
        **info,
        "documents": len(docs),
        "window_tokens": max_len,
        "stride_tokens": stride,
        "windows": len(requests),
    }
    return make_result("perplexity", len(docs), metrics, t0, settings)


SPEC = EvalSpec(
    "perplexity",
    PerplexityConfig,
    run,
    "rolling log-likelihood: perplexity, word/byte perplexity, bits per byte",
)
