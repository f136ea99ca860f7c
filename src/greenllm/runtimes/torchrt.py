"""PyTorch as a runtime: the model in memory, decoded by ``greenllm.decode`` (eager over the
dynamic KV cache, or the static-cache ``torch.compile``'d ``CompiledDecoder``).

``threads`` sets ``torch.set_num_threads`` while the runtime is open (restored by ``close``);
left unset, PyTorch's default (one thread per physical core) is used and recorded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .base import Runtime


def _weight_bytes_per_token(model: Any, total: int) -> int:
    """Stored weight bytes one decode step reads: all, except an untied input embedding."""
    from ..models import model_size_bytes

    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        if out is None or getattr(out, "weight", None) is not emb.weight:
            total -= model_size_bytes(emb)
    return int(total)


class TorchRuntime(Runtime):
    name = "torch"

    def __init__(
        self,
        model: Any,
        *,
        device: Any = None,
        compile: bool = False,
        max_cache_len: int | None = None,
        threads: int | None = None,
    ):
        import torch

        from ..decode import CompiledDecoder, forward_kwargs
        from ..models import model_size_bytes, param_count

        self.model = model
        try:
            model_device = next(model.parameters()).device
        except StopIteration:
            model_device = torch.device("cpu")
        self.device = torch.device(device) if device is not None else model_device
        self._threads_before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(int(threads))
        self.threads = torch.get_num_threads()
        self.compile = bool(compile)
        self.accepts = forward_kwargs(model)
        self.decoder = CompiledDecoder(model, max_cache_len or 2048) if compile else None
        self.decoding = (
            "greedy, static KV cache, torch.compile'd decode step, EOS ignored"
            if compile
            else "greedy, KV cache, EOS ignored"
        )
        self.size_bytes = model_size_bytes(model)
        self.weight_bytes_per_token = _weight_bytes_per_token(model, self.size_bytes)
        self.n_params = param_count(model)
        cfg = getattr(model, "config", None)
        self.n_ctx = int(getattr(cfg, "max_position_embeddings", 0) or 2048)

    def run_request(self, batch: dict, max_new_tokens: int) -> dict[str, Any]:
        from ..decode import run_request

        if self.decoder is not None:
            return self.decoder.run(batch, max_new_tokens, self.device)
        return run_request(self.model, batch, max_new_tokens, self.device, self.accepts)

    def logit_chunks(self, tokens: Sequence[int]) -> Iterator[tuple[int, Any]]:
        import torch

        from ..grad_mode import no_autograd

        with no_autograd(self.model):
            ids = torch.tensor([list(tokens)], device=self.device)
            logits = self.model(input_ids=ids).logits[0].float().cpu().numpy()
        yield 0, logits

    def info(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "compile": self.compile,
            "threads": self.threads,
            "torch_device": str(self.device),
        }

    def close(self) -> None:
        import torch

        if torch.get_num_threads() != self._threads_before:
            torch.set_num_threads(self._threads_before)
