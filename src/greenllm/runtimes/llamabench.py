"""llama.cpp's ``llama-bench`` inside greenllm's measurement window.

llama-bench measures speed only; greenllm gives it the energy figure. ``llama_bench(path)``
runs one explicit, untimed warm-up invocation (``-r 1``: page cache, CPU clocks, the binary
itself), then ``llama-bench -m FILE -p P -n N -t T -r R -o json`` as one metered window
(``greenllm.measure.measure`` with the meters bench uses; ``auto`` falls back to the labelled
estimate meter where nothing can be read, which counts the child process's CPU time). The
window spans the whole process: model load, llama-bench's own per-test warm-up (the full
prompt once, one generated token) and every repetition of the prompt test (``pp P``) and the
generation test (``tg N``).

Reported (one JSON-able dict):
- ``energy_j``, ``mean_power_w``, ``duration_s`` of the window, ``energy_per_token_j`` =
  energy / generated tokens over all repetitions (N x R; the prompt work is in the energy, as
  a request's prompt is in bench's J/token), ``tokens_per_wh``;
- llama-bench's own speeds (``gen_tokens_per_s`` / ``gen_tokens_per_s_stddev``: ``avg_ts`` /
  ``stddev_ts`` of ``tg N``; ``prompt_tokens_per_s`` likewise of ``pp P``) and greenllm's
  wall clock for the window (``window_gen_tokens_per_s`` = N x R / duration, load and prompt
  test included); ``llama_bench_busy_s`` is the sum of llama-bench's timed samples,
  ``window_overhead_s`` the rest of the window;
- the binary and its build (``build_commit``, ``build_number`` from llama-bench's JSON;
  ``built_from`` for a ``make llama-tools`` build), the CPU, the backends, every test row.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MeterError, ModelError
from ..units import J_PER_WH
from .llamabin import build_facts, find_binary, log_tail, spawn, stop

DEFAULT_TIMEOUT_S = 3600.0
_BUILD_KEYS = ("build_commit", "build_number", "cpu_info", "gpu_info", "backends")
_MODEL_KEYS = ("model_type", "model_size", "model_n_params")
_TEST_KEYS = (
    "n_prompt",
    "n_gen",
    "n_threads",
    "n_batch",
    "avg_ns",
    "stddev_ns",
    "avg_ts",
    "stddev_ts",
    "samples_ns",
    "samples_ts",
)


def llama_bench_command(
    binary: Path,
    path: Path,
    *,
    n_prompt: int,
    n_gen: int,
    threads: int | None,
    repetitions: int,
    extra_args: Sequence[str] = (),
) -> list[str]:
    cmd = [str(binary), "-m", str(path), "-p", str(n_prompt), "-n", str(n_gen)]
    if threads:
        cmd += ["-t", str(threads)]
    return cmd + ["-r", str(repetitions), "-o", "json", *map(str, extra_args)]


def run_llama_bench(
    cmd: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S, env: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Run a llama-bench command and return its JSON rows; ModelError (with its stderr's
    tail) when it fails, times out or prints no JSON. The process never outlives the call."""
    with tempfile.TemporaryDirectory(prefix="greenllm-llama-bench-") as tmp:
        out_path, log_path = Path(tmp) / "out.json", Path(tmp) / "stderr.log"
        with open(out_path, "wb") as out, open(log_path, "wb") as log:
            try:
                proc = spawn(cmd, log, env, stdout=out)
            except OSError as exc:
                raise ModelError(f"llama-bench ({cmd[0]}) cannot start: {exc}") from None
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                stop(proc)
                raise ModelError(
                    f"llama-bench ran past {timeout_s:g} s and was stopped; stderr: "
                    f"{log_tail(log_path)}"
                ) from None
            finally:
                stop(proc)  # also on KeyboardInterrupt
        if code != 0:
            raise ModelError(
                f"llama-bench exited with code {code} ({' '.join(cmd)}); stderr: "
                f"{log_tail(log_path) or '(empty)'}"
            )
        text = out_path.read_text(encoding="utf-8", errors="replace")
        try:
            rows = json.loads(text)
        except ValueError:
            raise ModelError(
                f"llama-bench printed no JSON ({' '.join(cmd)}): {text[-300:]!r}; stderr: "
                f"{log_tail(log_path)}"
            ) from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ModelError(f"llama-bench: expected a JSON array of tests, got {text[:200]!r}")
    return rows


def _test(rows: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    """The ``pp`` (prompt only) or ``tg`` (generation only) row."""
    for r in rows:
        n_prompt, n_gen = int(r.get("n_prompt") or 0), int(r.get("n_gen") or 0)
        if (kind == "tg" and n_gen > 0 and n_prompt == 0) or (
            kind == "pp" and n_prompt > 0 and n_gen == 0
        ):
            return r
    return None


def llama_bench(
    path: str | os.PathLike,
    *,
    n_prompt: int = 64,
    n_gen: int = 32,
    threads: int | None = None,
    repetitions: int = 5,
    warmup: bool = True,
    meters: Any = "auto",
    hz: float = 10.0,
    binary: str | os.PathLike | None = None,
    extra_args: Sequence[str] = (),
    timeout_s: float = DEFAULT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run llama.cpp's llama-bench on a GGUF file inside one metered window (module doc)."""
    from ..measure import invalid_window_reasons, measure, resolve_meters

    gguf = Path(path).expanduser()
    if gguf.suffix != ".gguf" or not gguf.is_file():
        raise ConfigError(f"llama-bench runs a .gguf file; {gguf} is not one")
    if n_gen < 1:
        raise ConfigError(f"n_gen: llama-bench must generate tokens for J/token, got {n_gen}")
    if n_prompt < 0 or repetitions < 1 or (threads is not None and threads < 1):
        raise ConfigError(
            f"llama-bench: need n_prompt >= 0, repetitions >= 1, threads >= 1 (got "
            f"{n_prompt}, {repetitions}, {threads})"
        )
    exe = Path(binary) if binary is not None else find_binary("llama-bench", env)

    def command(reps: int) -> list[str]:
        return llama_bench_command(
            exe,
            gguf,
            n_prompt=n_prompt,
            n_gen=n_gen,
            threads=threads,
            repetitions=reps,
            extra_args=extra_args,
        )

    warmup_s = 0.0
    if warmup:  # untimed, unmetered
        t0 = time.perf_counter()
        run_llama_bench(command(1), timeout_s, env)
        warmup_s = time.perf_counter() - t0
    cmd = command(repetitions)
    meter_objs, created = resolve_meters(meters)
    try:
        with measure(meter_objs, hz=hz) as handle:
            rows = run_llama_bench(cmd, timeout_s, env)
    finally:
        for m in created:
            m.close()
    report = handle.report
    if report is None:
        raise MeterError("llama-bench: the measurement window gave no report")
    bad = invalid_window_reasons(report)
    tg, pp = _test(rows, "tg"), _test(rows, "pp")
    if tg is None:
        raise ModelError(f"llama-bench printed no generation test (tg {n_gen}): {rows!r:.300}")
    n_reps = len(tg.get("samples_ns") or ()) or repetitions
    gen_tokens = n_gen * n_reps
    prompt_tokens = n_prompt * len(pp.get("samples_ns") or ()) if pp else 0
    busy_s = sum(sum(r.get("samples_ns") or ()) for r in rows) / 1e9
    energy = None if bad else float(report.energy_j)
    first = rows[0]
    return {
        "runtime": "llama-bench",
        "binary": str(exe),
        **{k: first.get(k) for k in _BUILD_KEYS},
        **build_facts(exe),
        "artifact": str(gguf),
        **{k: first.get(k) for k in _MODEL_KEYS},
        "command": cmd,
        "threads": int(tg.get("n_threads") or 0) or threads,
        "repetitions": n_reps,
        "warmup_s": warmup_s,
        "generated_tokens": gen_tokens,
        "prompt_tokens": prompt_tokens,
        "energy_j": energy,
        "energy_per_token_j": energy / gen_tokens if energy is not None else None,
        "tokens_per_wh": gen_tokens / (energy / J_PER_WH) if energy else None,
        "mean_power_w": None if bad else float(report.mean_power_w),
        "duration_s": float(report.duration_s),
        "gen_tokens_per_s": float(tg["avg_ts"]),
        "gen_tokens_per_s_stddev": float(tg.get("stddev_ts") or 0.0),
        "prompt_tokens_per_s": float(pp["avg_ts"]) if pp else None,
        "prompt_tokens_per_s_stddev": float(pp.get("stddev_ts") or 0.0) if pp else None,
        "window_gen_tokens_per_s": gen_tokens / report.duration_s if report.duration_s else None,
        "llama_bench_busy_s": busy_s,
        "window_overhead_s": float(report.duration_s) - busy_s,
        "meter": "+".join(report.meters) if report.meters else report.method,
        "estimated": bool(report.estimated),
        "invalid": bad,
        "energy": report.to_dict(),
        "tests": [{k: r.get(k) for k in _TEST_KEYS} for r in rows],
    }
