"""ONNX Runtime (CPU execution provider): the decoder greenllm's ONNX export writes
(``greenllm.export.onnx``: ``input_ids`` + per-layer past keys/values in, ``logits`` + presents
out), decoded greedily.

Each request runs the prompt with empty past tensors (``prefill_s`` ends at the first token's
argmax), then one token at a time feeding the presents back as the next past (``decode_s``).
Scoring runs a whole sequence in one call and reads the logits at every position.

Threads: ``threads`` sets the session's ``intra_op_num_threads`` (one inter-op thread);
left unset, ONNX Runtime's default (one per physical core) is used, recorded as ``default``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import MissingDependencyError, ModelError
from .base import Runtime, result_dict, single_sequence


def require_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime", "onnx", "the ONNX Runtime runtime") from exc
    return onnxruntime


class OrtRuntime(Runtime):
    name = "onnxruntime"
    decoding = "greedy (argmax of ONNX Runtime's logits), past key/value tensors, EOS ignored"

    def __init__(
        self, path: str | os.PathLike, *, threads: int | None = None, n_ctx: int | None = None
    ):
        from ..export.onnx import SIDECAR

        ort = require_ort()
        self.ort = ort
        self.path = Path(path)
        side = self.path.parent / SIDECAR
        if not self.path.is_file() or not side.is_file():
            raise ModelError(
                f"{self.path}: no ONNX decoder with its {SIDECAR} beside it; export it with "
                f"greenllm export MODEL --format onnx"
            )
        self.meta = json.loads(side.read_text())
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            self.sess = ort.InferenceSession(
                str(self.path), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise ModelError(f"{self.path}: ONNX Runtime cannot load it ({exc})") from None
        self.threads: int | str = int(threads) if threads else "default"
        self.n_layers = int(self.meta["n_layers"])
        self.kv_shape = (1, int(self.meta["kv_heads"]), 0, int(self.meta["head_dim"]))
        self.n_ctx = int(n_ctx or min(int(self.meta.get("context_length", 2048)), 2048))
        files = [self.path, Path(str(self.path) + ".data")]
        self.size_bytes = sum(p.stat().st_size for p in files if p.exists())
        self.n_params = int(self.meta.get("n_weights", 0))
        self.weight_bytes_per_token = self.size_bytes
        self.past_names = [i.name for i in self.sess.get_inputs()][1:]

    def _run(self, ids: Sequence[int], past: list[Any] | None) -> tuple[Any, list[Any]]:
        import numpy as np

        if past is None:
            empty = np.zeros(self.kv_shape, dtype=np.float32)
            past = [empty] * (2 * self.n_layers)
        feed = {"input_ids": np.asarray([ids], dtype=np.int64)}
        feed.update(zip(self.past_names, past))
        out = self.sess.run(None, feed)
        return out[0], out[1:]

    def run_request(self, batch: dict, max_new_tokens: int) -> dict[str, Any]:
        from ..decode import rss_bytes

        prompt = single_sequence(batch, self.name)
        peak = rss_bytes()
        t0 = time.perf_counter()
        logits, past = self._run(prompt, None)
        nxt = int(logits[0, -1].argmax())
        t1 = time.perf_counter()
        peak = max(peak, rss_bytes())
        generated = [nxt]
        for _ in range(max_new_tokens - 1):
            logits, past = self._run((nxt,), past)
            nxt = int(logits[0, -1].argmax())
            generated.append(nxt)
        t2 = time.perf_counter()
        return result_dict(prompt, generated, t0, t1, t2, max(peak, rss_bytes()))

    def logit_chunks(self, tokens: Sequence[int]) -> Iterator[tuple[int, Any]]:
        logits, _ = self._run(list(tokens), None)
        yield 0, logits[0]

    def info(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "onnxruntime": self.ort.__version__,
            "artifact": str(self.path),
            "artifact_type": self.meta.get("type"),
            "threads": self.threads,
            "n_ctx": self.n_ctx,
        }
