"""The runtime interface: one engine (PyTorch, llama.cpp in process or as ``llama-server``, ONNX
Runtime) that runs a model for the benchmark and the evaluators.

A ``Runtime`` offers
- ``run_request(batch, max_new_tokens) -> dict``: greedy decoding of one tokenized batch, timed
  exactly as ``greenllm.decode.run_request`` times it (``prefill_s`` = time to the first token,
  ``decode_s`` = the ``max_new_tokens - 1`` decode steps, ``e2e_s``; EOS ignored, so every request
  makes ``max_new_tokens`` tokens) and returning the same keys (``batch``, ``prompt_tokens``,
  ``new_tokens``, ``decode_tokens``, ``peak_rss_bytes``, ``tokens``);
- ``logit_chunks(tokens)``: the next-token logits at every position of one token sequence, in
  chunks (``score_tokens`` turns them into a log-likelihood, as the evaluators need);
- facts for the bench: ``size_bytes`` (the artifact as stored), ``n_params``,
  ``weight_bytes_per_token`` (what one decode step reads), ``info()`` (runtime, artifact,
  type, threads: recorded in the result), ``decoding`` (a one-line description);
- ``close()``.

A runtime object also answers the few calls the benchmark and the evaluators make on a torch
model (``parameters()``, ``buffers()``, ``eval()``, ``train()``, ``training``, ``config``
with the context length), so both take a runtime wherever they take a model. Token ids always
come from the Hugging Face tokenizer, so every runtime sees the same tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

from ..errors import UnsupportedError
from ..registry import Registry

RUNTIME_NAMES = ("torch", "llama.cpp", "onnxruntime", "llama-server")

RUNTIMES: Registry[Any] = Registry(
    "runtime",
    {
        "torch": "greenllm.runtimes.torchrt:TorchRuntime",
        "llama.cpp": "greenllm.runtimes.llamacpp:LlamaCppRuntime",
        "onnxruntime": "greenllm.runtimes.onnxrt:OrtRuntime",
        "llama-server": "greenllm.runtimes.llamaserver:LlamaServerRuntime",
    },
)

# runtimes that cannot give the evaluators logits, and what to use instead
NO_LOGITS = {
    "llama-server": (
        "runtime llama-server: the server returns probabilities of the tokens it generates "
        "(top n_probs), never the full-vocabulary logits at every prompt position that the "
        "perplexity / choice evaluators score; evaluate the same GGUF file with runtime "
        "llama.cpp (in process, the same llama.cpp) and bench it with llama-server"
    )
}


class Runtime:
    """Base class of the runtime adapters (see the module doc)."""

    name = "runtime"
    greenllm_runtime = True
    training = False
    decoding = "greedy, KV cache, EOS ignored"
    size_bytes = 0
    n_params = 0
    weight_bytes_per_token = 0
    n_ctx = 2048

    @property
    def config(self) -> SimpleNamespace:
        """What the evaluators read from a model config: the context length."""
        return SimpleNamespace(max_position_embeddings=self.n_ctx)

    # the calls bench / evaluators make on a torch model
    def parameters(self) -> Iterator[Any]:
        return iter(())

    def buffers(self) -> Iterator[Any]:
        return iter(())

    def eval(self) -> Runtime:
        return self

    def train(self, mode: bool = True) -> Runtime:
        return self

    def info(self) -> dict[str, Any]:
        return {"runtime": self.name}

    def close(self) -> None:
        return None

    def run_request(self, batch: dict, max_new_tokens: int) -> dict[str, Any]:
        raise NotImplementedError

    def logit_chunks(self, tokens: Sequence[int]) -> Iterator[tuple[int, Any]]:
        """(first position, float32 logits [n, vocab]) chunks covering every position."""
        raise NotImplementedError

    def logits(self, tokens: Sequence[int]) -> Any:
        """Next-token logits at every position: float32 [len(tokens), vocab]."""
        import numpy as np

        return np.concatenate([c for _, c in self.logit_chunks(tokens)], axis=0)

    def score_tokens(self, tokens: Sequence[int], n_scored: int) -> tuple[float, bool]:
        """(sum of log p(tokens[i] | tokens[:i]) over the last ``n_scored`` tokens, whether each
        is the argmax): what ``greenllm.evals.loglik`` scores per request."""
        tokens = list(tokens)
        return score_chunks(self.logit_chunks(tokens[:-1]), tokens, n_scored)


def score_chunks(chunks: Any, tokens: list[int], n_scored: int) -> tuple[float, bool]:
    """Log-likelihood of the last ``n_scored`` of ``tokens`` from logit chunks of
    ``tokens[:-1]`` (chunks may start after position 0 when they cover every scored one)."""
    import numpy as np

    first = len(tokens) - n_scored  # index of the first scored token
    total, greedy, seen = 0.0, True, 0
    for start, chunk in chunks:
        lo = max(first - 1, start)
        hi = start + chunk.shape[0]
        if start > first - 1 + seen:
            raise RuntimeError("logit chunks miss a scored position")
        if lo >= hi:
            continue
        rows = chunk[lo - start : hi - start].astype(np.float64)
        targets = np.asarray(tokens[lo + 1 : hi + 1])
        peak = rows.max(axis=1)
        lse = peak + np.log(np.exp(rows - peak[:, None]).sum(axis=1))
        total += float((rows[np.arange(len(targets)), targets] - lse).sum())
        greedy = greedy and bool((rows.argmax(axis=1) == targets).all())
        seen += hi - lo
    if seen != n_scored:
        raise RuntimeError(f"scored {seen} of {n_scored} positions")
    return total, greedy


def is_runtime(obj: Any) -> bool:
    return bool(getattr(obj, "greenllm_runtime", False))


def check_runtime(name: str) -> str:
    """``name`` when it is a known runtime, else UnknownNameError with a did-you-mean."""
    RUNTIMES.check(name)
    return name


def single_sequence(batch: dict, runtime: str) -> list[int]:
    """The token ids of a batch of one unpadded prompt (what llama.cpp / ONNX Runtime run)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if int(ids.shape[0]) != 1:
        raise UnsupportedError(
            f"workload.batch_size: the {runtime} runtime decodes one sequence at a time; "
            f"use batch_size: 1 (got a batch of {int(ids.shape[0])})"
        )
    return [int(t) for t, m in zip(ids[0].tolist(), mask[0].tolist()) if m]


def result_dict(
    prompt: list[int], generated: list[int], t0: float, t1: float, t2: float, peak: int
) -> dict[str, Any]:
    """The dict ``decode.run_request`` returns, for one sequence."""
    import torch

    n_new = len(generated)
    return {
        "prefill_s": t1 - t0,
        "decode_s": t2 - t1,
        "e2e_s": t2 - t0,
        "batch": 1,
        "prompt_tokens": len(prompt),
        "new_tokens": n_new,
        "decode_tokens": n_new - 1,
        "peak_rss_bytes": peak,
        "tokens": torch.tensor([generated], dtype=torch.long),
    }
