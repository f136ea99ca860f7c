"""The timed greedy decode loops behind ``greenllm.bench``.

``run_request`` is the eager loop: one prefill forward pass, then one forward pass per new
token over Hugging Face's dynamic KV cache; it works for any causal LM.

``CompiledDecoder`` is the same greedy decoding with a static KV cache (``StaticCache``, sized
once for the whole workload) and a ``torch.compile``'d decode step. The attention mask is one
fixed-size tensor (left padding zeroed, everything else one; causality comes from the
position the cache writes at), so every decode step has the same shapes and the step compiles
once.
Compiling removes most of the per-token Python and operator-dispatch cost, which at batch 1
on a CPU is a fifth of a small model's decode step. The prefill runs eagerly.

Both return the same dict of wall-clock seconds and token counts, and both decode exactly as
``generate()`` does greedily (EOS ignored: every request makes ``max_new_tokens`` tokens).
"""

from __future__ import annotations

import time
from typing import Any

from ._compat import cache_arg, cache_kwargs, forward_params, output_cache, takes_cache_position
from .errors import UnsupportedError, first_line

RECOMPILE_LIMIT = 64  # several models may share one forward's code object in a process


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def forward_kwargs(model) -> set[str]:
    """The named parameters of ``model.forward`` (empty when unreadable)."""
    return forward_params(model)


def _result(batch, ids, t0, t1, t2, peak, generated, max_new_tokens) -> dict[str, Any]:
    import torch

    tokens = torch.stack(generated, dim=1)
    return {
        "prefill_s": t1 - t0,
        "decode_s": t2 - t1,
        "e2e_s": t2 - t0,
        "batch": int(ids.shape[0]),
        "prompt_tokens": int(batch["attention_mask"].sum()),
        "new_tokens": int(tokens.numel()),
        "decode_tokens": int(ids.shape[0]) * (max_new_tokens - 1),
        "peak_rss_bytes": peak,
        "tokens": tokens,
    }


def run_request(model, batch, max_new_tokens: int, device, accepts: set[str]) -> dict[str, Any]:
    """Greedy prefill + decode of one batch over the dynamic KV cache (eager)."""
    import torch

    ids, mask = batch["input_ids"], batch["attention_mask"]
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
    extra: dict[str, Any] = {}
    if "logits_to_keep" in accepts:
        extra["logits_to_keep"] = 1
    use_pos = "position_ids" in accepts
    peak = rss_bytes()
    sync(device)
    t0 = time.perf_counter()
    out = model(
        input_ids=ids,
        attention_mask=mask,
        use_cache=True,
        **({"position_ids": pos} if use_pos else {}),
        **extra,
    )
    nxt = out.logits[:, -1, :].argmax(-1)
    sync(device)
    t1 = time.perf_counter()
    peak = max(peak, rss_bytes())
    past = output_cache(out)
    generated = [nxt]
    last_pos = pos[:, -1:]
    ones = torch.ones((mask.shape[0], 1), dtype=mask.dtype, device=mask.device)
    padded = not bool(mask.all())  # without padding the mask is all ones: leave it out
    for _ in range(max_new_tokens - 1):
        if padded:
            mask = torch.cat([mask, ones], dim=1)
        last_pos = last_pos + 1
        out = model(
            input_ids=nxt[:, None],
            attention_mask=mask if padded else None,
            use_cache=True,
            **cache_kwargs(model, past),
            **({"position_ids": last_pos} if use_pos else {}),
            **extra,
        )
        past = output_cache(out)
        nxt = out.logits[:, -1, :].argmax(-1)
        generated.append(nxt)
    sync(device)
    t2 = time.perf_counter()
    return _result(batch, ids, t0, t1, t2, max(peak, rss_bytes()), generated, max_new_tokens)


_STEPS: dict[type, Any] = {}


class CompiledDecoder:
    """Greedy decoding with a static KV cache of ``max_cache_len`` positions and a compiled
    decode step. The compiled step is kept per model class, so repeated benchmarks of the same
    model compile once."""

    def __init__(self, model, max_cache_len: int):
        import torch

        accepts = forward_kwargs(model)
        cache_name = cache_arg(model)
        if cache_name is None:
            raise UnsupportedError(
                f"compile: {type(model).__name__}.forward takes no KV "
                f"cache (neither cache nor past_key_values); a static-cache "
                f"compiled decode needs one. Run with compile: false"
            )
        self.cache_name = cache_name
        self.positions = takes_cache_position(model)
        self.model = model
        self.max_cache_len = int(max_cache_len)
        self.extra = {"logits_to_keep": 1} if "logits_to_keep" in accepts else {}
        # one compiled forward per model class, called with the model as its first argument:
        # it holds no reference to any model (a copy of a model never decodes with the
        # original's weights), and dynamo's guards tell models of one class apart
        cls = type(model)
        if cls not in _STEPS:
            _STEPS[cls] = torch.compile(cls.forward, dynamic=False)
        self.step = _STEPS[cls]

    def _cache(self):
        from transformers import StaticCache

        try:
            return StaticCache(config=self.model.config, max_cache_len=self.max_cache_len)
        except Exception as exc:  # noqa: BLE001 - any model-specific refusal
            raise UnsupportedError(
                f"compile: {type(self.model).__name__} has no static KV "
                f"cache ({exc}); run with compile: false"
            ) from exc

    def run(self, batch, max_new_tokens: int, device) -> dict[str, Any]:
        import torch

        ids, mask = batch["input_ids"], batch["attention_mask"]
        n_batch, width = ids.shape
        if width + max_new_tokens > self.max_cache_len:
            raise UnsupportedError(
                f"compile: {width} prompt + {max_new_tokens} new tokens "
                f"exceed the static cache of {self.max_cache_len}"
            )
        cache = self._cache()
        full = torch.ones((n_batch, self.max_cache_len), dtype=mask.dtype, device=mask.device)
        full[:, :width] = mask
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        peak = rss_bytes()
        try:
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                sync(device)
                t0 = time.perf_counter()
                where = (
                    {"cache_position": torch.arange(width, device=ids.device)}
                    if self.positions
                    else {}
                )
                out = self.model(
                    input_ids=ids,
                    attention_mask=full,
                    position_ids=pos,
                    use_cache=True,
                    **{self.cache_name: cache},
                    **where,
                    **self.extra,
                )
                nxt = out.logits[:, -1, :].argmax(-1)
                sync(device)
                t1 = time.perf_counter()
                peak = max(peak, rss_bytes())
                generated = [nxt]
                last_pos = pos[:, -1:]
                for i in range(max_new_tokens - 1):
                    last_pos = last_pos + 1
                    if self.positions:
                        where = {"cache_position": torch.tensor([width + i], device=ids.device)}
                    out = self.step(
                        self.model,
                        input_ids=nxt[:, None],
                        attention_mask=full,
                        position_ids=last_pos,
                        use_cache=True,
                        **{self.cache_name: cache},
                        **where,
                        **self.extra,
                    )
                    nxt = out.logits[:, -1, :].argmax(-1)
                    generated.append(nxt)
                sync(device)
                t2 = time.perf_counter()
        except UnsupportedError:
            raise
        except Exception as exc:  # torch.compile failures: no compiler, unsupported ops, ...
            if type(exc).__module__.startswith("torch"):
                raise UnsupportedError(
                    f"compile: torch.compile could not compile "
                    f"{type(self.model).__name__}'s decode step "
                    f"({type(exc).__name__}: {first_line(exc, 200)}); run with "
                    f"compile: false"
                ) from exc
            raise
        return _result(batch, ids, t0, t1, t2, max(peak, rss_bytes()), generated, max_new_tokens)
