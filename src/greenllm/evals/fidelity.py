"""``fidelity``: how closely a variant's next-token distributions follow the baseline's on the
same text (the way llama.cpp's community judges quantized files: KL divergence and "same top
token" rate, not perplexity alone).

The baseline is run once and stored compactly by ``build_reference(model, tokenizer, cfg,
path)``: per scored token, the ``top_k`` largest log-probabilities and their token ids, the
log-sum-exp of the logits and the log-probability of the true next token, in one safetensors
file (with the settings and the token ids, so a variant is scored on exactly those tokens).
``run(model, tokenizer, cfg, reference=path)`` then scores a variant against it:

  kl_mean         mean over tokens of KL(baseline || variant), natural log, computed on the
                  baseline's top-k tokens plus one tail bucket holding the rest of the mass
                  (``p_tail = 1 - sum(top-k p)``, ``q_tail = 1 - sum(q over those tokens)``).
                  Merging tokens into one bucket never increases a KL divergence, so this is
                  a lower bound of the full-vocabulary KL, tight when the tail is small.
  kl_median, kl_p99, kl_max   the same per-token values' quantiles
  top1_agreement  share of tokens where the variant's most likely token is the baseline's
  perplexity, baseline_perplexity, perplexity_ratio   on the same tokens
  baseline_tail_mass  mean probability the baseline puts outside its top-k

The hook the runner uses: the config's ``reference: baseline`` (default) means "the runner
passes the baseline's reference"; the runner calls ``build_reference`` on the baseline once
per config (``reference_name(cfg)`` names the file) and passes the path as ``reference=`` to
every unit's ``run``. Outside the runner, pass ``reference=`` yourself or set ``reference``
to the path of a file written by ``build_reference``.

The text: ``data`` (a path or ``builtin:``), its documents joined by a blank line, tokenised
once, the first ``max_tokens`` tokens cut into non-overlapping ``window``-token windows (each
predicts its tokens 2..window, as ``token_perplexity`` does).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, to_dict
from ..errors import DataError
from .base import EvalSpec, make_result, progress_bar

REFERENCE_FORMAT = "greenllm-fidelity-reference/1"
# what must be equal between a reference and the run that uses it
_MATCHED = ("data", "format", "text_field", "max_tokens", "window", "top_k")


@dataclass
class FidelityConfig:
    data: str = "builtin:wiki-sample"
    format: str = "auto"  # as the perplexity evaluator: auto, text, wikitext, lines
    text_field: str = "text"
    max_tokens: int = 4096  # tokens of the text scored (from its start)
    window: int = 512  # tokens per forward pass (non-overlapping windows)
    top_k: int = 32  # baseline log-probs kept per token
    reference: str = "baseline"  # "baseline" (the runner provides it) or a reference file
    batch_size: int = 1  # windows per forward pass

    def validate(self) -> None:
        for name, low in (("max_tokens", 2), ("window", 2), ("top_k", 1), ("batch_size", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"{name}: must be at least {low}, got {getattr(self, name)}")
        if self.format not in ("auto", "text", "wikitext", "lines"):
            raise ConfigError(f"format: {self.format!r} is not one of auto, text, wikitext, lines")


def reference_name(cfg: FidelityConfig) -> str:
    """File name of the baseline reference for these settings (one per distinct config)."""
    key = json.dumps({k: getattr(cfg, k) for k in _MATCHED}, sort_keys=True)
    return f"fidelity-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"


def _token_windows(tokenizer, cfg: FidelityConfig):
    """``[windows, window]`` token ids (last window may be shorter: a list of 1-D tensors)."""
    import torch

    from .perplexity import load_documents

    docs, info = load_documents(cfg.data, cfg.format, cfg.text_field)
    text = "\n\n".join(d.scored for d in docs)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids.reshape(-1)
    ids = ids[: cfg.max_tokens]
    if ids.numel() < 2:
        raise DataError(f"data: {info['data_file']} encodes to fewer than 2 tokens")
    chunks = [ids[s : s + cfg.window] for s in range(0, ids.numel(), cfg.window)]
    chunks = [c for c in chunks if c.numel() >= 2]
    return torch.cat(chunks), chunks, info


def _log_probs(model, chunks, batch_size: int, progress: bool):
    """Per window: log-softmax of the logits predicting tokens 2..n, ``[n - 1, vocab]``, and
    the log-sum-exp of those logits ``[n - 1]``; yields ``(log_probs, lse, targets)``."""
    import torch

    device = next(model.parameters()).device
    with progress_bar(len(chunks), "fidelity", progress) as advance, torch.no_grad():
        for start in range(0, len(chunks), batch_size):
            group = chunks[start : start + batch_size]
            same = all(c.numel() == group[0].numel() for c in group)
            batches = [torch.stack(group)] if same else [c[None] for c in group]
            for ids in batches:
                logits = model(input_ids=ids.to(device)).logits.float()[:, :-1]
                lse = torch.logsumexp(logits, dim=-1)
                lp = logits - lse[..., None]
                for b in range(ids.shape[0]):
                    yield lp[b].cpu(), lse[b].cpu(), ids[b, 1:]
            advance(len(group))


def build_reference(
    model: Any, tokenizer: Any, cfg: FidelityConfig, path: str | Path, *, progress: bool = False
) -> Path:
    """Run ``model`` (the baseline) once on the text and store its top-k next-token
    log-probabilities, log-sum-exp and true-token log-probabilities at ``path``."""
    import torch
    from safetensors.torch import save_file

    ids, chunks, info = _token_windows(tokenizer, cfg)
    top_lp, top_id, lses, true_lp = [], [], [], []
    for lp, lse, target in _log_probs(model, chunks, cfg.batch_size, progress):
        k = min(cfg.top_k, lp.shape[-1])
        v, i = torch.topk(lp, k, dim=-1)
        top_lp.append(v)
        top_id.append(i.to(torch.int32))
        lses.append(lse)
        true_lp.append(lp.gather(-1, target[:, None]).reshape(-1))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": REFERENCE_FORMAT,
        "settings": json.dumps({k: getattr(cfg, k) for k in _MATCHED}),
        "data_info": json.dumps(info, default=str),
    }
    tmp = out.with_name(out.name + ".partial")
    save_file(
        {
            "input_ids": ids.to(torch.int32).contiguous(),
            "top_logprobs": torch.cat(top_lp).contiguous(),
            "top_ids": torch.cat(top_id).contiguous(),
            "logsumexp": torch.cat(lses).contiguous(),
            "true_logprob": torch.cat(true_lp).contiguous(),
        },
        str(tmp),
        metadata=meta,
    )
    tmp.replace(out)
    return out


def load_reference(path: str | Path, cfg: FidelityConfig) -> dict[str, Any]:
    """The tensors of a reference file; DataError when it is missing, not a reference, or
    made with other settings."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"fidelity reference {str(p)!r} does not exist; build it from the baseline with "
            "greenllm.evals.fidelity.build_reference(model, tokenizer, cfg, path)"
        )
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear error
        raise DataError(f"fidelity reference {str(p)!r} is not readable ({exc})") from None
    if meta.get("format") != REFERENCE_FORMAT:
        raise DataError(f"{str(p)!r} is not a fidelity reference (format {meta.get('format')!r})")
    stored = json.loads(meta.get("settings", "{}"))
    wanted = {k: getattr(cfg, k) for k in _MATCHED}
    diff = {k: (stored.get(k), v) for k, v in wanted.items() if stored.get(k) != v}
    if diff:
        raise DataError(
            f"fidelity reference {str(p)!r} was built with other settings: "
            + ", ".join(f"{k}={a!r} (asked {b!r})" for k, (a, b) in diff.items())
        )
    return tensors


def tail_bucket_kl(p_top_lp, q_lp_full, top_ids):
    """Per-token KL(P || Q) over P's top-k tokens plus one tail bucket (see the module doc).
    ``p_top_lp [n, k]`` log-probs of P, ``q_lp_full [n, vocab]`` log-probs of Q."""
    import torch

    q_top_lp = q_lp_full.gather(-1, top_ids.long())
    p_top = p_top_lp.double().exp()
    q_top = q_top_lp.double().exp()
    kl = (p_top * (p_top_lp.double() - q_top_lp.double())).sum(-1)
    p_tail = (1 - p_top.sum(-1)).clamp_min(0)
    q_tail = (1 - q_top.sum(-1)).clamp_min(1e-30)
    tail = torch.where(p_tail > 0, p_tail * (p_tail.clamp_min(1e-30).log() - q_tail.log()), 0.0)
    return (kl + tail).clamp_min(0), p_tail


def run(
    model: Any,
    tokenizer: Any,
    cfg: FidelityConfig,
    *,
    reference: str | Path | None = None,
    progress: bool = False,
):
    """Score ``model`` against a baseline reference (``reference=`` a path from
    ``build_reference``; else ``cfg.reference`` when it names a file)."""
    import torch

    t0 = time.perf_counter()
    if reference is None:
        if cfg.reference == "baseline":
            raise DataError(
                "fidelity: reference 'baseline' is provided by the runner; outside a recipe "
                "run pass reference= a file from build_reference(baseline, tokenizer, cfg, "
                "path), or set reference: PATH"
            )
        reference = cfg.reference
    ref = load_reference(reference, cfg)
    ids, chunks, info = _token_windows(tokenizer, cfg)
    if not torch.equal(ids.to(torch.int32), ref["input_ids"]):
        raise DataError(
            "fidelity: the text tokenises differently from the reference's tokens (another "
            "tokenizer or text); rebuild the reference"
        )
    kls, tails, agree, nll = [], [], 0, 0.0
    pos = 0
    for lp, _lse, target in _log_probs(model, chunks, cfg.batch_size, progress):
        n = lp.shape[0]
        p_lp, p_id = ref["top_logprobs"][pos : pos + n], ref["top_ids"][pos : pos + n]
        kl, tail = tail_bucket_kl(p_lp, lp, p_id)
        kls.append(kl)
        tails.append(tail)
        agree += int((lp.argmax(-1) == p_id[:, 0].long()).sum())
        nll -= float(lp.gather(-1, target[:, None]).double().sum())
        pos += n
    kl_all = torch.cat(kls)
    n_tok = int(kl_all.numel())
    base_nll = -float(ref["true_logprob"].double().sum())
    ppl, base_ppl = math.exp(nll / n_tok), math.exp(base_nll / n_tok)
    q = torch.quantile(kl_all.float(), torch.tensor([0.5, 0.99]))
    metrics = {
        "kl_mean": float(kl_all.mean()),
        "kl_median": float(q[0]),
        "kl_p99": float(q[1]),
        "kl_max": float(kl_all.max()),
        "top1_agreement": agree / n_tok,
        "perplexity": ppl,
        "baseline_perplexity": base_ppl,
        "perplexity_ratio": ppl / base_ppl,
        "baseline_tail_mass": float(torch.cat(tails).mean()),
        "tokens": n_tok,
    }
    settings = {**to_dict(cfg), **info, "reference_file": Path(reference).name}
    return make_result("fidelity", n_tok, metrics, t0, settings)


SPEC = EvalSpec(
    "fidelity",
    FidelityConfig,
    run,
    "next-token fidelity to the baseline: mean KL divergence, top-1 agreement, perplexity ratio",
)

__all__ = [
    "FidelityConfig",
    "SPEC",
    "build_reference",
    "load_reference",
    "reference_name",
    "run",
    "tail_bucket_kl",
]
