"""llama.cpp in process through ``llama-cpp-python``: a GGUF file, decoded greedily.

Each request clears the KV cache, decodes the prompt in ``n_batch`` chunks with logits for its
last token only (``prefill_s`` ends when the first token's argmax is known), then decodes one
token at a time (``decode_s``); the argmax is taken in numpy over llama.cpp's logits buffer, so
no sampler runs. The batch is filled directly (``llama_batch`` fields) and ``llama_decode``
called, which keeps greenllm's per-token overhead to a few microseconds. llama.cpp's own
counters for the same request (``llama_perf_context``: prompt and decode milliseconds and
token counts) are returned under ``llama_perf`` so a benchmark can compare both timings.

Scoring (``logit_chunks``) decodes a sequence with logits at every position, reusing the KV
cache of the longest prefix it shares with the previous sequence (the choices of one
question), and hands the logits back ``n_batch`` positions at a time.

Threads: ``threads`` sets llama.cpp's ``n_threads`` and ``n_threads_batch``; left unset, they
are llama-cpp-python's defaults (half the cores for decoding, all for the prompt); ``info()``
records which.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError, ModelError, UnsupportedError
from .base import Runtime, result_dict, score_chunks, single_sequence

DEFAULT_N_CTX = 2048
INSTALL = (
    "pip install llama-cpp-python (an sdist: it compiles llama.cpp with cmake and a C++ "
    "compiler, a few minutes), or pip install 'greenllm[llamacpp]'"
)


def require_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingDependencyError(
            "llama-cpp-python", "llamacpp", "the llama.cpp runtime"
        ) from exc
    return llama_cpp


def _rss() -> int:
    from ..decode import rss_bytes

    return rss_bytes()


def gguf_facts(path: Path) -> tuple[Any, int, int]:
    """(``inspect_gguf`` report, trained context length, bytes of weights one decode step
    reads: every tensor but an untied embedding, of which a lookup reads one row) of a GGUF
    file; ModelError when there is no such file."""
    from ..export.base import gguf_module
    from ..export.gguf_read import inspect_gguf, read_header

    if not path.is_file():
        raise ModelError(f"{path}: no such GGUF file")
    meta, tensors = read_header(path)
    arch = meta.get("general.architecture", "")
    trained_ctx = int(meta.get(f"{arch}.context_length", DEFAULT_N_CTX) or DEFAULT_N_CTX)
    names = {t["name"] for t in tensors}
    sizes = gguf_module().GGML_QUANT_SIZES
    qtypes = gguf_module().GGMLQuantizationType
    wbytes = 0
    for t in tensors:
        block, size = sizes[qtypes(t["type"])]
        if t["name"] == "token_embd.weight" and "output.weight" in names:
            continue  # a lookup reads one row of an untied embedding
        wbytes += t["n_elements"] // block * size
    return inspect_gguf(path), trained_ctx, int(wbytes)


class GGUFRuntime(Runtime):
    """A runtime that runs one GGUF file: its facts (size, weights, bytes per decode step,
    context) come from the file's header (``gguf_facts``)."""

    def _read_gguf(self, path: str | os.PathLike, n_ctx: int | None) -> None:
        self.path = Path(path)
        self.report, trained_ctx, self.weight_bytes_per_token = gguf_facts(self.path)
        self.n_ctx = int(n_ctx or min(trained_ctx, DEFAULT_N_CTX))
        self.n_params = self.report.n_weights
        self.size_bytes = self.report.size_bytes


class LlamaCppRuntime(GGUFRuntime):
    name = "llama.cpp"
    decoding = "greedy (argmax of llama.cpp's logits), KV cache, EOS ignored"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        threads: int | None = None,
        n_ctx: int | None = None,
        n_batch: int = 512,
    ):
        llama_cpp = require_llama_cpp()
        self.lib = llama_cpp
        self._read_gguf(path, n_ctx)
        kwargs: dict[str, Any] = {}
        if threads:
            kwargs = {"n_threads": int(threads), "n_threads_batch": int(threads)}
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=self.n_ctx,
                n_batch=n_batch,
                n_ubatch=n_batch,
                logits_all=False,
                verbose=False,
                **kwargs,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: llama.cpp cannot load it ({exc})") from None
        self.n_batch = n_batch
        self.n_vocab = int(self.llm.n_vocab())
        self.threads = int(self.llm.context_params.n_threads)
        self.threads_batch = int(self.llm.context_params.n_threads_batch)
        self._ctx = self.llm.ctx
        self._batch = self.llm._batch.batch
        self._past: list[int] = []  # tokens whose keys/values the cache holds (scoring)
        # per request: greenllm's clock and llama.cpp's perf counters (cleared by the caller)
        self.timings: list[dict[str, float]] = []

    # ------------------------------------------------------------------ low level
    def _clear(self, keep: int = 0) -> None:
        self.llm._ctx.kv_cache_seq_rm(-1, keep, -1)
        del self._past[keep:]

    def _decode(self, tokens: Sequence[int], pos: int, all_logits: bool) -> None:
        """Decode ``tokens`` at positions ``pos...`` (one chunk of at most n_batch)."""
        b = self._batch
        n = len(tokens)
        b.n_tokens = n
        for i, tok in enumerate(tokens):
            b.token[i] = tok
            b.pos[i] = pos + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = all_logits
        b.logits[n - 1] = True
        rc = self.lib.llama_decode(self._ctx, b)
        if rc != 0:
            raise UnsupportedError(
                f"llama.cpp: llama_decode returned {rc} at position {pos} (context of "
                f"{self.n_ctx} tokens; a longer prompt + max_new_tokens needs a larger n_ctx)"
            )

    def _argmax_last(self) -> int:
        import numpy as np

        ptr = self.lib.llama_get_logits_ith(self._ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def _perf(self) -> dict[str, float]:
        p = self.lib.llama_perf_context(self._ctx)
        return {
            "t_p_eval_ms": float(p.t_p_eval_ms),
            "t_eval_ms": float(p.t_eval_ms),
            "n_p_eval": int(p.n_p_eval),
            "n_eval": int(p.n_eval),
        }

    # ------------------------------------------------------------------ interface
    def run_request(self, batch: dict, max_new_tokens: int) -> dict[str, Any]:
        prompt = single_sequence(batch, self.name)
        if len(prompt) + max_new_tokens > self.n_ctx:
            raise UnsupportedError(
                f"llama.cpp: {len(prompt)} prompt + {max_new_tokens} new tokens exceed the "
                f"context of {self.n_ctx}; open the runtime with a larger n_ctx"
            )
        self._clear()
        self.lib.llama_perf_context_reset(self._ctx)
        decode, argmax = self._decode, self._argmax_last
        peak = _rss()
        t0 = time.perf_counter()
        for lo in range(0, len(prompt), self.n_batch):
            decode(prompt[lo : lo + self.n_batch], lo, False)
        nxt = argmax()
        t1 = time.perf_counter()
        peak = max(peak, _rss())
        generated = [nxt]
        pos = len(prompt)
        for _ in range(max_new_tokens - 1):
            decode((nxt,), pos, False)
            nxt = argmax()
            generated.append(nxt)
            pos += 1
        t2 = time.perf_counter()
        out = result_dict(prompt, generated, t0, t1, t2, max(peak, _rss()))
        out["llama_perf"] = self._perf()
        self.timings.append(
            {k: out[k] for k in ("prefill_s", "decode_s", "prompt_tokens", "decode_tokens")}
            | out["llama_perf"]
        )
        self._past = []  # the cache now holds a generation, not a scored prefix
        self._clear()
        return out

    def _chunks_from(self, tokens: list[int], keep: int) -> Iterator[tuple[int, Any]]:
        """Logits of positions ``keep...`` of ``tokens``, reusing the cached first ``keep``."""
        import numpy as np

        if len(tokens) > self.n_ctx:
            raise UnsupportedError(
                f"llama.cpp: a sequence of {len(tokens)} tokens exceeds the context of "
                f"{self.n_ctx}; score with a smaller max_length or a larger n_ctx"
            )
        self._clear(keep)
        for lo in range(keep, len(tokens), self.n_batch):
            chunk = tokens[lo : lo + self.n_batch]
            self._decode(chunk, lo, True)
            self._past.extend(chunk)
            ptr = self.lib.llama_get_logits(self._ctx)
            yield lo, np.ctypeslib.as_array(ptr, shape=(len(chunk), self.n_vocab)).copy()

    def logit_chunks(self, tokens: Sequence[int]) -> Iterator[tuple[int, Any]]:
        return self._chunks_from(list(tokens), 0)

    def score_tokens(self, tokens: Sequence[int], n_scored: int) -> tuple[float, bool]:
        """As the base, but the keys/values of the prefix shared with the previous scored
        sequence are reused (up to the first position whose logits are needed)."""
        tokens = list(tokens)
        inputs = tokens[:-1]
        limit = min(len(self._past), len(tokens) - n_scored - 1)
        keep = 0
        while keep < limit and self._past[keep] == inputs[keep]:
            keep += 1
        return score_chunks(self._chunks_from(inputs, keep), tokens, n_scored)

    def info(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "llama_cpp_python": getattr(self.lib, "__version__", "?"),
            "artifact": str(self.path),
            "artifact_type": self.report.type,
            "artifact_tensor_types": dict(self.report.types),
            "bits_per_weight": self.report.bits_per_weight,
            "threads": self.threads,
            "threads_batch": self.threads_batch,
            "n_ctx": self.n_ctx,
        }

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None
