"""llama.cpp's ``llama-server`` as a runtime: greenllm starts the user's binary on a GGUF file and
times each request over HTTP, inside the bench's own measurement windows.

Start: ``llama-server -m FILE --host 127.0.0.1 --port 0`` (the server binds a free port and
logs it; or an explicit ``port``), one slot (``-np 1``), no prompt cache in RAM
(``--cache-ram 0``), no web UI, ``-t`` / ``-tb`` = ``threads`` when given, ``-c`` = ``n_ctx``.
Its stdout and stderr go to a log file; greenllm waits until ``GET /health`` answers 200. A
server that exits, does not answer, or cannot bind its port is a ``ModelError`` /
``UnsupportedError`` whose message holds the log's tail. The process is stopped by ``close()``,
at interpreter exit (``atexit``), on a failed start, and (Linux) when greenllm is killed.

Requests: ``POST /completion`` with the prompt as token ids (the Hugging Face tokenizer's, as
for every runtime; a token-id prompt gets no BOS added by the server), ``n_predict`` =
``max_new_tokens``, ``ignore_eos``, greedy (``samplers: [top_k]``, ``top_k: 1``,
``temperature: 0``), ``cache_prompt: false`` and ``stream: true``: ``prefill_s`` ends when the
first streamed token arrives, ``decode_s`` when the final event does. The server never streams
a token that ends inside a multi-byte UTF-8 character (only the one completing it), so the
first token can arrive one decode step late and ``tokens`` can hold fewer ids than were
generated; the token counts are the server's (``tokens_predicted``, checked to be
``max_new_tokens``). The server's
own ``timings`` (``prompt_ms``, ``predicted_ms``, ``prompt_n``, ``predicted_n``, ...) come
back under ``server_timings`` so a benchmark can compare both clocks. ``peak_rss_bytes`` is the
server process's peak RSS (``VmHWM``), not greenllm's. A log greenllm created is removed by
``close()`` unless an error named it.

No logits: the server returns top-N probabilities of *generated* tokens only, never the
full-vocabulary logits at every prompt position that ``perplexity`` / ``choice`` score, so
``logit_chunks`` raises UnsupportedError (evaluate the same GGUF with runtime ``llama.cpp``).
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ModelError, UnsupportedError
from .base import NO_LOGITS, result_dict, single_sequence
from .llamabin import build_facts, find_binary, log_tail, spawn, stop
from .llamacpp import GGUFRuntime

DEFAULT_START_TIMEOUT_S = 120.0
DEFAULT_REQUEST_TIMEOUT_S = 600.0
_LISTENING = re.compile(rb"listening on https?://[^\s:]+:(\d+)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peak_rss(pid: int) -> int:
    """Peak RSS of process ``pid`` in bytes (``VmHWM``; the current RSS elsewhere; 0 when
    gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:  # noqa: BLE001 - a vanished process has no RSS
        return 0


def completion_body(prompt: list[int], max_new_tokens: int) -> dict[str, Any]:
    """The POST /completion body of one request: greedy (top-k 1), EOS ignored, no prompt
    cache, streamed, with the token ids of every streamed piece."""
    return {
        "prompt": list(prompt),
        "n_predict": int(max_new_tokens),
        "ignore_eos": True,
        "samplers": ["top_k"],
        "top_k": 1,
        "temperature": 0.0,
        "cache_prompt": False,
        "stream": True,
        "return_tokens": True,
        "n_probs": 0,
    }


class LlamaServerRuntime(GGUFRuntime):
    name = "llama-server"
    decoding = "greedy (llama-server top_k 1), KV cache, EOS ignored, streamed over HTTP"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        threads: int | None = None,
        n_ctx: int | None = None,
        port: int | None = None,
        binary: str | os.PathLike | None = None,
        extra_args: Sequence[str] = (),
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        log_path: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
    ):
        self.proc: subprocess.Popen | None = None
        self._temp_log = False
        self._listening = False
        self.binary = Path(binary) if binary is not None else find_binary("llama-server", env)
        self._read_gguf(path, n_ctx)
        self.threads = int(threads) if threads else None
        self.request_timeout_s = float(request_timeout_s)
        self._temp_log = log_path is None  # removed by close() unless something failed
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="greenllm-llama-server-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.host = "127.0.0.1"
        self.port = int(port) if port else 0
        cmd = [str(self.binary), "-m", str(self.path), "--host", self.host]
        cmd += ["--port", str(self.port), "-c", str(self.n_ctx), "-np", "1"]
        cmd += ["--cache-ram", "0", "--no-webui"]
        if self.threads:
            cmd += ["-t", str(self.threads), "-tb", str(self.threads)]
        self.cmd = cmd + [str(a) for a in extra_args]
        self.timings: list[dict[str, Any]] = []  # per request: greenllm's clock + the server's
        self.build_info = ""
        atexit.register(self.close)
        try:
            self._start(float(start_timeout_s), env)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ process
    def _fail(self, what: str) -> str:
        self._temp_log = False  # the message names the log: keep it
        tail = log_tail(self.log_path)
        return f"llama-server ({self.binary}) {what}; log {self.log_path}: {tail or '(empty)'}"

    def _start(self, timeout_s: float, env: Mapping[str, str] | None) -> None:
        with open(self.log_path, "wb") as log:
            try:
                proc = self.proc = spawn(self.cmd, log, env)
            except OSError as exc:
                raise ModelError(f"llama-server ({self.binary}) cannot start: {exc}") from None
        deadline = time.monotonic() + timeout_s
        while True:
            code = proc.poll()
            if code is not None:
                text = self.log_path.read_bytes() if self.log_path.is_file() else b""
                if b"couldn't bind" in text:
                    raise UnsupportedError(
                        self._fail(
                            f"could not bind {self.host}:{self.port or 'a free port'} (in use? "
                            f"leave port unset for a free one)"
                        )
                    )
                raise ModelError(self._fail(f"exited with code {code} while starting"))
            if not self._listening:  # our server bound its port (not whoever else holds it)
                m = _LISTENING.search(self.log_path.read_bytes())
                if m:
                    self.port, self._listening = int(m.group(1)), True
            if self._listening and self._health_ok():
                break
            if time.monotonic() > deadline:
                raise ModelError(self._fail(f"did not become healthy within {timeout_s:g} s"))
            time.sleep(0.05)
        try:
            props = self._get_json("/props")
            self.build_info = str(props.get("build_info", ""))
        except (OSError, ValueError, http.client.HTTPException):
            self.build_info = ""

    def _health_ok(self) -> bool:
        try:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=2.0)
            try:
                conn.request("GET", "/health")
                resp = conn.getresponse()
                resp.read()
                return resp.status == 200
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False

    def _connect(self) -> http.client.HTTPConnection:
        """A new connection, already open (the server closes one after a streamed answer)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.request_timeout_s)
        conn.connect()
        return conn

    def _get_json(self, route: str) -> dict[str, Any]:
        conn = self._connect()
        try:
            conn.request("GET", route)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise ValueError(f"GET {route}: HTTP {resp.status}")
        out = json.loads(body)
        return out if isinstance(out, dict) else {}

    # ------------------------------------------------------------------ requests
    def _request_failed(self, why: str) -> UnsupportedError:
        if self.proc is not None and self.proc.poll() is not None:
            return UnsupportedError(self._fail(f"died (exit code {self.proc.returncode}); {why}"))
        return UnsupportedError(self._fail(why))

    def _events(
        self, conn: http.client.HTTPConnection, body: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """The JSON events of a streamed /completion (server-sent events, ``data: {...}``)."""
        try:
            conn.request(
                "POST", "/completion", json.dumps(body), {"Content-Type": "application/json"}
            )
            resp = conn.getresponse()
            if resp.status != 200:
                text = resp.read().decode("utf-8", "replace")[:500]
                raise self._request_failed(f"POST /completion: HTTP {resp.status}: {text}")
            while True:
                line = resp.readline()
                if not line:
                    return
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    if isinstance(event, dict) and "error" in event:
                        raise self._request_failed(f"POST /completion: {event['error']}")
                    yield event
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise self._request_failed(f"POST /completion failed: {exc}") from None

    def run_request(self, batch: dict, max_new_tokens: int) -> dict[str, Any]:
        prompt = single_sequence(batch, self.name)
        if len(prompt) + max_new_tokens > self.n_ctx:
            raise UnsupportedError(
                f"llama-server: {len(prompt)} prompt + {max_new_tokens} new tokens exceed the "
                f"context of {self.n_ctx}; open the runtime with a larger n_ctx"
            )
        body = completion_body(prompt, max_new_tokens)
        if self.proc is None:
            raise UnsupportedError("llama-server: the runtime is closed")
        t1 = t2 = None
        final: dict[str, Any] | None = None
        streamed: list[int] = []
        try:
            conn = self._connect()  # before the clock starts
        except OSError as exc:
            raise self._request_failed(f"cannot connect to port {self.port}: {exc}") from None
        try:
            t0 = time.perf_counter()
            for event in self._events(conn, body):
                ids = event.get("tokens") or ()
                if ids and t1 is None:
                    t1 = time.perf_counter()
                streamed.extend(int(t) for t in ids)
                if event.get("stop"):
                    t2 = time.perf_counter()
                    final = event
                    break
        finally:
            conn.close()
        if final is None or t2 is None:
            raise self._request_failed("the stream ended without a final event")
        n_new = int(final.get("tokens_predicted") or 0)
        if n_new != max_new_tokens:
            raise UnsupportedError(
                f"llama-server generated {n_new} tokens for n_predict={max_new_tokens} "
                f"(stop_type {final.get('stop_type')!r}, truncated {final.get('truncated')})"
            )
        if t1 is None:
            t1 = t2
        out = result_dict(prompt, streamed, t0, t1, t2, _peak_rss(self.proc.pid))
        # a token ending inside a UTF-8 character is never streamed (only the next one is):
        # the counts are the server's, ``tokens`` holds the ids it streamed
        out["new_tokens"], out["decode_tokens"] = n_new, n_new - 1
        out["streamed_tokens"] = len(streamed)
        timings = dict(final.get("timings") or {})
        out["server_timings"] = timings
        self.timings.append(
            {k: out[k] for k in ("prefill_s", "decode_s", "prompt_tokens", "decode_tokens")}
            | {f"server_{k}": v for k, v in timings.items()}
        )
        return out

    def logit_chunks(self, tokens: Sequence[int]) -> Iterator[tuple[int, Any]]:
        raise UnsupportedError(NO_LOGITS[self.name])

    def score_tokens(self, tokens: Sequence[int], n_scored: int) -> tuple[float, bool]:
        raise UnsupportedError(NO_LOGITS[self.name])

    def info(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "binary": str(self.binary),
            "build_info": self.build_info,
            **build_facts(self.binary),
            "artifact": str(self.path),
            "artifact_type": self.report.type,
            "artifact_tensor_types": dict(self.report.types),
            "bits_per_weight": self.report.bits_per_weight,
            "threads": self.threads if self.threads else "default",
            "n_ctx": self.n_ctx,
            **({} if self._temp_log else {"server_log": str(self.log_path)}),
        }

    def close(self) -> None:
        proc, self.proc = self.proc, None
        stop(proc)
        atexit.unregister(self.close)
        if self._temp_log:
            self.log_path.unlink(missing_ok=True)
