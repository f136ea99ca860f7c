"""Log-likelihood machinery shared by every evaluator, matching lm-evaluation-harness v0.4.x.

Tokenisation (``Encoder``) mirrors lm-eval's ``HFLM``:

* ``encode(text)`` uses the tokenizer's own special-token default (``add_bos_token=None``), or
  ``add_special_tokens=add_bos_token`` when set, and never adds special tokens to a string that
  already starts with the BOS text (``tok_encode``).
* ``encode_pair(context, continuation)`` moves trailing whitespace of the context to the
  continuation, encodes ``context + continuation`` as one string and splits it at the length of
  the encoded context (``_encode_pair``); an empty context becomes the prefix token (BOS, else
  EOS) unless the continuation already starts with it (``loglikelihood``).
* Requests longer than ``max_length + 1`` tokens are truncated from the left.

Scoring (``score``) is shared-prefix by packing: for every item (a group of requests, e.g. the
choices of one question) the longest common token prefix appears once in a row, followed by
each request's remaining input tokens as a separate segment; a 4-D attention mask lets each
segment see the prefix and itself only, and position ids restart after the prefix, so every
token sees exactly what it would see in its own unpacked sequence. One forward pass scores a
whole batch of items; rows are right-padded (no mask at all when nothing is packed). Leading
tokens that every row of a batch shares (a task header, or the k-shot examples of an MMLU
subject, whose items are batched together) run once and their keys/values are reused, across
batches too. Log-probabilities are computed only at the scored positions: each distinct
position of a batch is projected onto the vocabulary once, in cache-sized chunks, as
``logit - logsumexp``. The batch size never changes which tokens a position sees (scores agree
across batch sizes to float rounding). A model with sliding-window attention (Mistral,
Phi-3, Gemma-2/3) has its own per-layer masks, which one packed 4-D mask cannot express: an
item with a request of at least ``sliding_window`` input tokens is not packed, and such rows
are batched apart from packed ones, with the model's own (causal, sliding) mask.
``score_naive`` is the plain one-forward-per-request reference used by the tests.
torch is imported inside functions only.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .._compat import cache_kwargs, output_cache
from ..errors import DataError, GreenLLMError
from ..grad_mode import no_autograd

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 2048  # lm-eval's default when neither config nor tokenizer give one
_TOKENIZER_INFINITY = 1000000000000000019884624838656


@dataclass(frozen=True)
class Request:
    """One (context, continuation) pair in token ids; ``item`` groups the choices of a doc."""

    item: int
    context: tuple[int, ...]
    continuation: tuple[int, ...]


def resolve_max_length(model: Any, tokenizer: Any = None, default: int = DEFAULT_MAX_LENGTH) -> int:
    """The model's context length as lm-eval resolves it (config, then tokenizer, then 2048)."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    mml = getattr(tokenizer, "model_max_length", None)
    if mml is not None and mml != _TOKENIZER_INFINITY:
        return int(mml)
    return default


class Encoder:
    """Tokenisation exactly as lm-eval's HFLM does it (see module docstring)."""

    def __init__(self, tokenizer: Any, add_bos_token: bool | None = None):
        if tokenizer is None:
            raise GreenLLMError(
                "evaluation needs the model's tokenizer; pass tokenizer=... "
                "(greenllm.models.load_model returns (model, tokenizer))"
            )
        self.tokenizer = tokenizer
        self.add_bos_token = add_bos_token
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        self.prefix_token_id = bos if bos is not None else eos
        if self.prefix_token_id is None:
            raise GreenLLMError(
                "the tokenizer has neither a BOS nor an EOS token; log-likelihood "
                "scoring needs one as the prefix of an empty context"
            )
        self._bos_text = tokenizer.decode(self.prefix_token_id)

    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        kwargs: dict[str, Any] = {}
        if add_special_tokens is not None:
            kwargs["add_special_tokens"] = add_special_tokens
        elif self.add_bos_token is not None:
            kwargs["add_special_tokens"] = self.add_bos_token
        if add_special_tokens is None and self._bos_text and text.startswith(self._bos_text):
            kwargs["add_special_tokens"] = False
        return list(self.tokenizer.encode(text, **kwargs))

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context == "":
            cont = self.encode(continuation, add_special_tokens=False)
            if not cont:
                raise DataError("an empty context with an empty continuation cannot be scored")
            if cont[0] != self.prefix_token_id:
                return [self.prefix_token_id], cont
            return cont[:1], cont[1:]
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx) :]

    def bos_in_encoding(self) -> bool:
        """Whether ``encode`` puts the BOS token in front of ordinary text (recorded)."""
        ids = self.encode("a")
        return bool(ids) and ids[0] == self.tokenizer.bos_token_id

    def settings(self) -> dict[str, Any]:
        tok = self.tokenizer
        return {
            "tokenizer": getattr(tok, "name_or_path", "") or type(tok).__name__,
            "add_bos_token": self.add_bos_token,
            "bos_in_encoding": self.bos_in_encoding(),
            "prefix_token_id": self.prefix_token_id,
        }


def build_requests(encoder: Encoder, pairs: Iterable[tuple[int, str, str]]) -> list[Request]:
    """``(item, context, continuation)`` strings -> token ``Request`` objects."""
    out = []
    for item, ctx, cont in pairs:
        c, k = encoder.encode_pair(ctx, cont)
        if not k:
            raise DataError(
                f"item {item}: the continuation {cont!r} encodes to no tokens after "
                f"the context; nothing to score"
            )
        out.append(Request(item, tuple(c), tuple(k)))
    return out


def _truncate(req: Request, max_length: int) -> tuple[list[int], int]:
    """Full input tokens (lm-eval: ``(ctx + cont)[-(max_length + 1):]``) and the cont length."""
    if len(req.continuation) > max_length:
        raise DataError(
            f"item {req.item}: a continuation of {len(req.continuation)} tokens is "
            f"longer than the model's {max_length}-token context"
        )
    full = list(req.context + req.continuation)[-(max_length + 1) :]
    return full, len(req.continuation)


def _device(model: Any):
    import torch

    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


def _gather(logits_rows, targets):
    """Sum of log-softmax at ``targets`` and whether each target is the argmax."""
    import torch

    logp = torch.log_softmax(logits_rows, dim=-1)
    tgt = torch.as_tensor(targets, device=logp.device)
    ll = logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    greedy = bool((logp.argmax(-1) == tgt).all())
    return float(ll.sum()), greedy


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    i = 0
    while i < n and all(s[i] == first[i] for s in seqs):
        i += 1
    return i


def sliding_window(model: Any) -> int | None:
    """The model's sliding attention window in tokens, or None when no layer uses one
    (Mistral, Phi-3, Gemma-2/3 and Qwen2 with ``use_sliding_window`` have one)."""
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    window = getattr(cfg, "sliding_window", None)
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        return None
    if getattr(cfg, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types and not any("sliding" in str(t) for t in layer_types):
        return None
    return window


def _needs_model_mask(plan, window: int | None) -> bool:
    """Whether a request of ``plan`` is at least ``window`` input tokens long: its tokens then
    attend through the model's own sliding-window mask, which a packed row's 4-D mask (one
    mask for every layer, full and sliding alike) would replace."""
    return window is not None and any(len(f) - 1 >= window for f in plan[1])


def _plan(requests: Sequence[Request], max_length: int, window: int | None = None):
    """Group requests by item; each plan is (indices, full token lists, cont lengths, k) where
    the first ``k`` tokens are shared by every request of the plan and run once. With a
    sliding ``window``, an item with a request of ``window`` or more input tokens is not
    packed: each of its requests is a plan of its own."""
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(requests):
        groups.setdefault(r.item, []).append(i)
    plans = []
    for idx in groups.values():
        fulls, clens = zip(*(_truncate(requests[i], max_length) for i in idx))
        if len(idx) == 1:
            plans.append((idx, fulls, clens, len(fulls[0]) - 1))
            continue
        k = min(_common_prefix(fulls), min(len(f) - c for f, c in zip(fulls, clens)))
        if k == 0 or _needs_model_mask((idx, fulls, clens, k), window):
            # nothing shared (e.g. contexts differ at the first token), or longer than the
            # sliding window: score apart
            plans.extend(([i], [f], [c], len(f) - 1) for i, f, c in zip(idx, fulls, clens))
        else:
            plans.append((list(idx), list(fulls), list(clens), k))
    return plans


def _packed_len(plan) -> int:
    _, fulls, _, k = plan
    return k + sum(len(f) - 1 - k for f in fulls)


LONG_SHARED_PREFIX = 64  # items sharing this many leading tokens are batched together


def _order(plans) -> list[int]:
    """Batch order. Items whose inputs share a long prefix (the k-shot examples of one MMLU
    subject) stay together so that prefix runs once per batch; within such a group, and among
    the other items, the longest packed row comes first (little padding, and memory peaks
    early, as lm-eval does)."""
    lex = sorted(range(len(plans)), key=lambda p: plans[p][1][0])
    groups: list[list[int]] = []
    rest: list[int] = []
    run = lex[:1]
    for prev, cur in zip(lex, lex[1:] + [None]):
        if (
            cur is not None
            and _common_prefix(
                [plans[prev][1][0][:LONG_SHARED_PREFIX], plans[cur][1][0][:LONG_SHARED_PREFIX]]
            )
            == LONG_SHARED_PREFIX
        ):
            run.append(cur)
            continue
        (groups.append(run) if len(run) > 1 else rest.extend(run))
        run = [cur]
    by_len = lambda p: (-_packed_len(plans[p]), p)  # noqa: E731
    groups = [sorted(g, key=by_len) for g in groups] + [sorted(rest, key=by_len)]
    groups.sort(key=lambda g: by_len(g[0]) if g else (0, 0))
    return [p for g in groups for p in g]


def score(
    model: Any,
    requests: Sequence[Request],
    *,
    batch_size: int = 8,
    max_length: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[float, bool]]:
    """Shared-prefix scoring: ``(log-likelihood, is_greedy)`` per request, in input order."""
    if batch_size < 1:
        raise GreenLLMError(f"batch_size must be at least 1, got {batch_size}")
    max_length = max_length or resolve_max_length(model)
    if getattr(model, "greenllm_runtime", False):  # issue 14: llama.cpp / ONNX Runtime logits
        return score_runtime(model, requests, max_length=max_length, progress=progress)
    window = sliding_window(model)
    plans = _plan(requests, max_length, window)
    order = _order(plans)
    # rows at least a sliding window long run in batches of their own, without a packed 4-D
    # mask (which would replace the model's sliding-window mask in every row of its batch)
    long = {p for p in order if _needs_model_mask(plans[p], window)}
    batches = [
        part[lo : lo + batch_size]
        for part in ([p for p in order if p not in long], [p for p in order if p in long])
        for lo in range(0, len(part), batch_size)
    ]
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    device = _device(model)
    prefixes: dict = {}  # shared leading tokens -> their keys/values (see _score_batch)
    with no_autograd(model):
        for members in batches:
            batch = [plans[p] for p in members]
            _score_batch(model, batch, results, device, prefixes)
            if progress:
                progress(sum(len(b[0]) for b in batch))
    return results  # type: ignore[return-value]


_HEAD_CHUNK = 128  # positions projected onto the vocabulary at a time (logits stay in cache)


def _split_head(model):
    """(base model, output head) when logits are exactly ``head(base(...).last_hidden_state)``,
    so log-probabilities can be computed in chunks instead of materialising all logits."""
    cfg = getattr(model, "config", None)
    if any(
        getattr(cfg, a, None)
        for a in (
            "final_logit_softcapping",
            "logit_scale",
            "output_multiplier_scale",
            "logits_scaling",
        )
    ):
        return None
    prefix = getattr(model, "base_model_prefix", "")
    base = getattr(model, prefix, None) if prefix else None
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if base is None or head is None or base is model:
        return None
    return base, head


def _run(model, split, keep, **kwargs):
    """One forward pass -> (rows: hidden states or logits at positions ``keep``, cache)."""
    if split is not None:
        out = split[0](**kwargs)
        hidden = out.last_hidden_state
        return (hidden if keep is None else hidden[:, keep]), output_cache(out)
    try:
        out = model(logits_to_keep=0 if keep is None else keep, **kwargs)
        return out.logits, output_cache(out)
    except TypeError:  # a model without logits_to_keep
        out = model(**kwargs)
        return (out.logits if keep is None else out.logits[:, keep]), output_cache(out)


def _positions_ll(split, rows, wanted):
    """Log-probabilities for ``wanted`` = [(row index, target token)] over ``rows`` (hidden
    states or logits, one per distinct scored position). Each row is projected onto the
    vocabulary once, in chunks of ``_HEAD_CHUNK`` rows, however many targets it serves:
    ``log p(t) = logit[t] - logsumexp(logits)``. Returns float32 log-probs and is-argmax flags,
    one per entry."""
    import torch

    row_of = torch.as_tensor([w[0] for w in wanted], dtype=torch.long, device=rows.device)
    tgt = torch.as_tensor([w[1] for w in wanted], dtype=torch.long, device=rows.device)
    ll = torch.empty(len(wanted), dtype=torch.float32, device=rows.device)
    hit = torch.empty(len(wanted), dtype=torch.bool, device=rows.device)
    for lo in range(0, rows.shape[0], _HEAD_CHUNK):
        part = rows[lo : lo + _HEAD_CHUNK]
        logits = (split[1](part) if split is not None else part).float()
        top = logits.amax(-1, keepdim=True)
        lse = logits.sub(top).exp_().sum(-1).log_().add_(top.squeeze(-1))
        sel = ((row_of >= lo) & (row_of < lo + part.shape[0])).nonzero().squeeze(-1)
        r, t = row_of[sel] - lo, tgt[sel]
        picked = logits[r, t]
        ll[sel] = picked - lse[r]
        # greedy = the target is argmax (its first index, on an exact tie, as lm-eval's argmax)
        greedy = picked == top.squeeze(-1)[r]
        tied = greedy.nonzero().squeeze(-1)
        if tied.numel():
            greedy[tied] = logits[r[tied]].argmax(-1) == t[tied]
        hit[sel] = greedy
    return ll, hit


MIN_SHARED_PREFIX = 8  # fewer shared tokens than this are not worth a separate forward pass


def _batch_prefix(layouts, batch) -> int:
    """How many leading tokens all rows share and can run once: within every row's own
    shared part and before its first scored position; 0 when too few to pay off."""
    if len(batch) < 2:
        return 0
    limit = min(
        min(k, min(len(f) - 1 - c for f, c in zip(fulls, clens))) for _, fulls, clens, k in batch
    )
    n = _common_prefix([toks[:limit] for toks, _, _ in layouts])
    return n if n >= MIN_SHARED_PREFIX else 0


_NO_PREFIX = "prefix sharing failed for this model"


def _run_after_prefix(model, split, prefixes, start, ids, pos_ids, mask, device):
    """Rows after their shared first ``start`` tokens, over the prefix's cached keys/values
    (computed once and kept in ``prefixes``: run alone, a short prefix reads every weight)."""
    key = tuple(ids[0, :start].tolist())
    if key not in prefixes:
        if len(prefixes) >= 8:
            prefixes.pop(next(iter(prefixes)))
        prefixes[key] = _run(
            model,
            split,
            [start - 1],
            input_ids=ids[:1, :start].to(device),
            position_ids=pos_ids[:1, :start].to(device),
            use_cache=True,
        )[1]
    past = copy.deepcopy(prefixes[key])
    past.batch_repeat_interleave(ids.shape[0])
    mask = None if mask is None else mask[:, :, start:, :].to(device)
    return _run(
        model,
        split,
        None,
        input_ids=ids[:, start:].to(device),
        attention_mask=mask,
        position_ids=pos_ids[:, start:].to(device),
        use_cache=True,
        **cache_kwargs(model if split is None else split[0], past),
    )[0]


def _score_batch(model, batch, results, device, prefixes: dict) -> None:
    """Score a batch of plans in one forward pass (two when the rows share a header, see
    ``_run_after_prefix``) by packing: each row holds an item's shared prefix once, followed
    by every request's remaining input tokens as its own segment. A 4-D attention mask lets a
    segment see the prefix and itself (causally) but no other segment, and position ids
    restart after the prefix, so each request sees exactly the tokens of its own unpacked
    sequence."""
    import torch

    split = _split_head(model)
    layouts = []
    for _idx, fulls, _clens, k in batch:
        toks, pos, segs = list(fulls[0][:k]), list(range(k)), []
        for full in fulls:
            seg = list(full[k:-1])
            segs.append(len(toks))
            toks += seg
            pos += range(k, k + len(seg))
        layouts.append((toks, pos, segs))
    width = max(len(t) for t, _, _ in layouts)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    pos_ids = torch.zeros((len(batch), width), dtype=torch.long)
    for r, (toks, pos, _) in enumerate(layouts):
        ids[r, : len(toks)] = torch.tensor(toks)
        pos_ids[r, : len(pos)] = torch.tensor(pos)
    packed = any(len(t) > b[3] for (t, _, _), b in zip(layouts, batch))
    if packed:
        allow = torch.zeros((len(batch), 1, width, width), dtype=torch.bool)
        for r, ((toks, _, segs), (_, fulls, _, k)) in enumerate(zip(layouts, batch)):
            allow[r, 0, :k, :k] = torch.ones(k, k, dtype=torch.bool).tril()
            for s, full in zip(segs, fulls):
                n = len(full) - 1 - k
                if n > 0:
                    allow[r, 0, s : s + n, :k] = True
                    allow[r, 0, s : s + n, s : s + n] = torch.ones(n, n, dtype=torch.bool).tril()
            pad = torch.arange(len(toks), width)
            allow[r, 0, pad, pad] = True  # padding rows see themselves: no empty softmax
        dtype = next(model.parameters()).dtype
        if not dtype.is_floating_point:  # pragma: no cover - quantized storage
            dtype = torch.float32
        mask = torch.zeros(allow.shape, dtype=dtype).masked_fill_(~allow, torch.finfo(dtype).min)
    else:
        mask = None  # right padding under a causal mask: no real token sees a pad (as lm-eval)
    # the leading tokens every row of the batch shares (e.g. MMLU's "The following are multiple
    # choice questions ..." header) run once, as one row whose keys/values all rows then reuse
    # (kept across batches: computing a short prefix alone reads every weight once)
    start = 0 if prefixes.get(_NO_PREFIX) else _batch_prefix(layouts, batch)
    out_rows = None
    if start:
        try:
            out_rows = _run_after_prefix(model, split, prefixes, start, ids, pos_ids, mask, device)
        except Exception as exc:  # noqa: BLE001 - a model whose cache cannot be shared so
            log.info("scoring without shared-prefix caching for %s: %s", type(model).__name__, exc)
            prefixes.clear()
            prefixes[_NO_PREFIX] = True  # score this batch and the rest without it
            start = 0
    if out_rows is None:
        out_rows, _ = _run(
            model,
            split,
            None,
            input_ids=ids.to(device),
            attention_mask=None if mask is None else mask.to(device),
            position_ids=pos_ids.to(device),
            use_cache=False,
        )
    # every scored position of the batch, each once (MMLU's four answers share one position)
    slot: dict[tuple[int, int], int] = {}
    wanted, owners = [], []
    for r, ((_, _, segs), (idx, fulls, clens, k)) in enumerate(zip(layouts, batch)):
        for i, full, c, s in zip(idx, fulls, clens, segs):
            # the output at input position p predicts token p+1; scored: len-1-c .. len-2
            for p in range(len(full) - 1 - c, len(full) - 1):
                at = (r, (p if p < k else s + (p - k)) - start)
                wanted.append((slot.setdefault(at, len(slot)), full[p + 1]))
                owners.append(i)
    where = torch.as_tensor(list(slot), dtype=torch.long, device=out_rows.device)
    ll, hit = _positions_ll(split, out_rows[where[:, 0], where[:, 1]], wanted)
    per: dict[int, list[int]] = {}
    for j, i in enumerate(owners):
        per.setdefault(i, []).append(j)
    for i, js in per.items():  # a float32 sum over the request's tokens, as lm-eval adds them
        js_t = torch.as_tensor(js)
        results[i] = (float(ll[js_t].sum()), bool(hit[js_t].all()))


def score_runtime(
    runtime: Any,
    requests: Sequence[Request],
    *,
    max_length: int,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[float, bool]]:
    """Scoring through a ``greenllm.runtimes`` runtime: each request's full token sequence is
    run once (truncated as lm-eval does) and scored from the runtime's logits; the runtime may
    reuse the keys/values of a prefix shared with the previous request."""
    out = []
    for req in requests:
        full, c = _truncate(req, max_length)
        out.append(runtime.score_tokens(full, c))
        if progress:
            progress(1)
    return out


def score_naive(
    model: Any, requests: Sequence[Request], *, max_length: int | None = None
) -> list[tuple[float, bool]]:
    """Reference scoring: one full forward pass per request, no batching, no cache."""
    import torch

    max_length = max_length or resolve_max_length(model)
    device = _device(model)
    out = []
    with no_autograd(model):
        for req in requests:
            full, c = _truncate(req, max_length)
            inp = torch.tensor([full[:-1]], device=device)
            logits = model(input_ids=inp).logits[0]
            out.append(_gather(logits[-c:].float(), full[-c:]))
    return out


def rolling_windows(
    tokens: Sequence[int], prefix_token: int, max_seq_len: int, context_len: int = 1
) -> list[tuple[list[int], list[int]]]:
    """lm-eval's ``get_rolling_token_windows`` + ``make_disjoint_window``: (context, predicted)
    pairs that predict every token once; ``context_len`` > 1 gives overlapping (strided)
    windows where each prediction sees at least ``context_len - 1`` earlier tokens."""
    if not 1 <= context_len <= max_seq_len:
        raise GreenLLMError(f"window context {context_len} must be between 1 and {max_seq_len}")
    tokens = list(tokens)
    if not tokens:
        return []
    pred_len = max_seq_len - context_len + 1
    first = min(max_seq_len, len(tokens))
    windows = [([prefix_token] + tokens[: first - 1], tokens[:first])]
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, pred_len)
        end = done + n
        windows.append((tokens[max(end - max_seq_len - 1, 0) : end - 1], tokens[end - n : end]))
        done += n
    return [(a[: len(a) - (len(b) - 1)], b) for a, b in windows]
