"""llama.cpp's own binaries: ``llama-server`` as a runtime, ``llama-bench`` inside greenllm's
energy window.

Two kinds of tests:
- always: the binaries replaced by tests/data/llama_bin/fake_llama.py, which replays what the
  real ones answered for the tiny model (recording.json, tools/record_llama_bin.py), so the
  whole path runs: process start and stop, /health, streamed /completion, the bench, the
  errors (missing binary, a server that dies at start, a port in use, never healthy);
- with the real binaries (GREENLLM_LLAMA_BENCH / GREENLLM_LLAMA_SERVER, PATH, or the cache
  folder of ``make llama-tools``): the same checks against them; they skip naming the missing
  binary and ``make llama-tools``.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time
from pathlib import Path

import pytest

from greenllm.errors import MissingBinaryError, MissingDependencyError, ModelError, UnsupportedError
from greenllm.runtimes.llamabin import find_binary

DATA = Path(__file__).parent / "data" / "llama_bin"
RECORDING = DATA / "recording.json"
PROMPTS = ["The quick brown fox", "Energy per token is measured"]
MAX_NEW_TOKENS = 6
BENCH_ARGS = {"n_prompt": 8, "n_gen": 4, "threads": 1, "repetitions": 2}


def tiny_gguf(folder: Path):
    """(GGUF Q8_0 path, tokenizer) of the tests' tiny Llama (the recorded model)."""
    from greenllm.export import export_model
    from greenllm.testing import tiny_bpe_tokenizer, tiny_causal_lm

    model, tok = tiny_causal_lm(0, vocab_size=320), tiny_bpe_tokenizer()
    rep = export_model(model, tok, "gguf", "q8_0", folder / "tiny.gguf")
    return Path(rep.path), tok


def _missing(program: str) -> str | None:
    """Why the real ``program`` cannot run here (None when it can)."""
    try:
        find_binary(program)
    except MissingBinaryError as exc:
        return str(exc)
    return None


def _needs(program: str):
    why = _missing(program)
    return pytest.mark.skipif(why is not None, reason=f"real {program} unavailable: {why}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_gguf(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def recording():
    return json.loads(RECORDING.read_text(encoding="utf-8"))


def _fake(folder: Path, kind: str) -> Path:
    """An executable that runs fake_llama.py as llama-server / llama-bench."""
    exe = folder / f"llama-{kind}"
    exe.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" "{DATA / "fake_llama.py"}" {kind} "{RECORDING}" "$@"\n'
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    """GREENLLM_LLAMA_SERVER / _BENCH pointing at the fakes; the fake's pid file."""
    monkeypatch.setenv("GREENLLM_LLAMA_SERVER", str(_fake(tmp_path, "server")))
    monkeypatch.setenv("GREENLLM_LLAMA_BENCH", str(_fake(tmp_path, "bench")))
    monkeypatch.setenv("FAKE_LLAMA_PIDFILE", str(tmp_path / "pid"))
    monkeypatch.delenv("FAKE_LLAMA_MODE", raising=False)
    return tmp_path


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _batch(tok, text):
    enc = tok([text], return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


# --- locating the binaries ---------------------------------------------------------------------


def test_missing_binary_names_the_variable_and_make_llama_tools(tmp_path):
    env = {"PATH": str(tmp_path), "GREENLLM_CACHE": str(tmp_path / "cache")}
    with pytest.raises(MissingBinaryError) as info:
        find_binary("llama-server", env)
    msg = str(info.value)
    assert "GREENLLM_LLAMA_SERVER" in msg and "make llama-tools" in msg
    assert isinstance(info.value, MissingDependencyError)  # callers that catch the family


def test_a_set_variable_must_name_a_runnable_file(tmp_path):
    plain = tmp_path / "llama-bench"
    plain.write_text("")
    for value, why in ((tmp_path / "nope", "does not exist"), (plain, "is not executable")):
        env = {"GREENLLM_LLAMA_BENCH": str(value), "PATH": ""}
        with pytest.raises(MissingBinaryError, match=f"GREENLLM_LLAMA_BENCH=.*{why}"):
            find_binary("llama-bench", env)


def test_binary_found_on_path_then_in_the_make_llama_tools_folder(tmp_path):
    cache = tmp_path / "cache"
    built = cache / "llama.cpp-0.0.1" / "bin"
    built.mkdir(parents=True)
    for d in (tmp_path, built):
        exe = d / "llama-server"
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    env = {"PATH": str(tmp_path), "GREENLLM_CACHE": str(cache)}
    assert find_binary("llama-server", env) == (tmp_path / "llama-server").resolve()
    env["PATH"] = ""
    assert find_binary("llama-server", env) == (built / "llama-server").resolve()


def test_runtime_names_accept_llama_server():
    from greenllm.bench import Workload
    from greenllm.runtimes import RUNTIME_NAMES

    assert "llama-server" in RUNTIME_NAMES
    Workload(runtime="llama-server").validate()


# --- llama-server, replayed --------------------------------------------------------------------


def test_replayed_server_request_tokens_and_timings(fake_env, tiny, recording):
    from greenllm.runtimes.llamaserver import LlamaServerRuntime

    path, tok = tiny
    rt = LlamaServerRuntime(path, threads=1)
    pid = int((fake_env / "pid").read_text())
    try:
        assert rt.port > 0 and rt.proc.pid == pid
        assert rt.info()["build_info"] == recording["server"]["props"]["build_info"]
        assert rt.info()["threads"] == 1 and "-t" in rt.cmd
        for text, rec in zip(PROMPTS, recording["server"]["completions"]):
            out = rt.run_request(_batch(tok, text), MAX_NEW_TOKENS)  # one kept-alive connection
            events = [json.loads(e) for e in rec["events"]]
            final = events[-1]
            assert out["tokens"][0].tolist() == [t for e in events for t in e.get("tokens", ())]
            assert out["streamed_tokens"] <= MAX_NEW_TOKENS == final["tokens_predicted"]
            assert (
                out["new_tokens"] == MAX_NEW_TOKENS and out["decode_tokens"] == MAX_NEW_TOKENS - 1
            )
            assert out["prompt_tokens"] == len(tok(text)["input_ids"])
            assert 0 < out["prefill_s"] <= out["e2e_s"] and out["decode_s"] >= 0
            assert out["server_timings"] == final["timings"]
            assert out["server_timings"]["predicted_n"] == MAX_NEW_TOKENS
            assert out["peak_rss_bytes"] > 0
        assert len(rt.timings) == 2
    finally:
        rt.close()
    assert rt.proc is None and _gone(pid)
    assert not rt.log_path.exists()  # its temporary log goes with it (no error named it)


def test_bench_runs_through_a_replayed_server(fake_env, tiny):
    from greenllm.bench import Workload, bench

    path, tok = tiny
    wl = Workload(
        prompts=PROMPTS,
        max_new_tokens=MAX_NEW_TOKENS,
        warmup=1,
        repeats=2,
        min_window_s=0,
        runtime="llama-server",
        threads=1,
    )
    r = bench(str(path), tok, wl, meters=["estimate"], hz=20.0)
    assert r.device["runtime"] == "llama-server" and r.device["runtime_threads"] == 1
    assert r.device["runtime_build_info"]
    assert r.metrics["energy_per_token_j"] > 0 and r.metrics["decode_tokens_per_s"] > 0
    assert all(row["output_tokens"] == row["passes"] * 2 * MAX_NEW_TOKENS for row in r.per_repeat)
    assert _gone(int((fake_env / "pid").read_text()))  # the bench closed what it opened


def test_server_without_logits_refuses_evaluators_before_starting(fake_env, tiny):
    from greenllm.evals.base import evaluate

    path, tok = tiny
    with pytest.raises(UnsupportedError, match="runtime llama.cpp"):
        evaluate(str(path), tok, "perplexity", runtime="llama-server", data="builtin:wiki-sample")
    assert not (fake_env / "pid").exists()  # no server was started for nothing


def test_server_logit_calls_say_what_to_use(fake_env, tiny):
    from greenllm.runtimes.llamaserver import LlamaServerRuntime

    rt = LlamaServerRuntime(tiny[0])
    try:
        with pytest.raises(UnsupportedError, match="perplexity / choice.*runtime llama.cpp"):
            rt.score_tokens([1, 2, 3], 2)
        with pytest.raises(UnsupportedError, match="full-vocabulary logits"):
            list(rt.logit_chunks([1, 2, 3]))
    finally:
        rt.close()


def test_server_dying_at_start_is_an_error_with_its_log_tail(fake_env, tiny, monkeypatch):
    from greenllm.runtimes.llamaserver import LlamaServerRuntime

    monkeypatch.setenv("FAKE_LLAMA_MODE", "die")
    with pytest.raises(ModelError, match="exited with code 1 while starting.*failed to load model"):
        LlamaServerRuntime(tiny[0], log_path=fake_env / "server.log")
    assert _gone(int((fake_env / "pid").read_text()))


def test_server_never_healthy_is_stopped(fake_env, tiny, monkeypatch):
    from greenllm.runtimes.llamaserver import LlamaServerRuntime

    monkeypatch.setenv("FAKE_LLAMA_MODE", "hang")
    t0 = time.monotonic()
    with pytest.raises(ModelError, match="did not become healthy within 1 s.*listening on"):
        LlamaServerRuntime(tiny[0], start_timeout_s=1.0, log_path=fake_env / "server.log")
    assert time.monotonic() - t0 < 10
    assert _gone(int((fake_env / "pid").read_text()))


def _busy_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


def test_port_in_use_is_a_clear_error(fake_env, tiny):
    from greenllm.runtimes.llamaserver import LlamaServerRuntime

    with _busy_port() as s:
        port = s.getsockname()[1]
        with pytest.raises(UnsupportedError, match=f"could not bind 127.0.0.1:{port}.*in use"):
            LlamaServerRuntime(tiny[0], port=port, log_path=fake_env / "server.log")
    assert _gone(int((fake_env / "pid").read_text()))


def test_server_killed_midway_is_an_error_naming_it(fake_env, tiny):
    from greenllm.runtimes.llamaserver import LlamaServerRuntime

    path, tok = tiny
    rt = LlamaServerRuntime(path, log_path=fake_env / "server.log")
    try:
        rt.proc.kill()
        rt.proc.wait()
        with pytest.raises(UnsupportedError, match=r"died \(exit code -9\)"):
            rt.run_request(_batch(tok, PROMPTS[0]), MAX_NEW_TOKENS)
    finally:
        rt.close()


# --- llama-bench, replayed ---------------------------------------------------------------------


def test_llama_bench_in_the_window_replayed(fake_env, tiny, recording):
    from greenllm.runtimes.llamabench import llama_bench

    res = llama_bench(tiny[0], **BENCH_ARGS, meters=["estimate"], hz=20.0)
    rows = recording["bench"]["rows"]
    tg = next(r for r in rows if r["n_gen"] > 0)
    pp = next(r for r in rows if r["n_prompt"] > 0)
    assert res["build_commit"] == rows[0]["build_commit"]
    assert res["build_number"] == rows[0]["build_number"]
    assert res["gen_tokens_per_s"] == tg["avg_ts"] and res["prompt_tokens_per_s"] == pp["avg_ts"]
    assert res["generated_tokens"] == BENCH_ARGS["n_gen"] * BENCH_ARGS["repetitions"]
    assert res["prompt_tokens"] == BENCH_ARGS["n_prompt"] * BENCH_ARGS["repetitions"]
    assert res["energy_j"] > 0 and res["estimated"] and res["meter"] == "estimate"
    assert res["energy_per_token_j"] == pytest.approx(res["energy_j"] / res["generated_tokens"])
    assert res["window_gen_tokens_per_s"] == pytest.approx(
        res["generated_tokens"] / res["duration_s"]
    )
    assert res["warmup_s"] > 0  # the untimed warm-up ran
    cmd = res["command"]
    assert cmd[cmd.index("-o") + 1] == "json" and cmd[cmd.index("-r") + 1] == "2"
    json.dumps(res)  # JSON-able as it is


def test_llama_bench_failure_has_its_stderr(fake_env, tiny, monkeypatch):
    from greenllm.runtimes.llamabench import llama_bench

    monkeypatch.setenv("FAKE_LLAMA_MODE", "die")
    with pytest.raises(ModelError, match="exited with code 1.*failed to load model"):
        llama_bench(tiny[0], **BENCH_ARGS, meters=["estimate"])


def test_cli_bench_runtime_llama_bench(fake_env, tiny, capsys):
    from greenllm.cli import main

    args = ["bench", str(tiny[0]), "--runtime", "llama-bench", "--meter", "estimate"]
    args += ["--max-new-tokens", "4", "--prompt-tokens", "8", "--repeats", "2", "--threads", "1"]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runtime"] == "llama-bench" and out["energy_per_token_j"] > 0
    assert main(args) == 0
    assert "energy per generated token" in capsys.readouterr().out
    assert main([*args, "--batch-size", "2"]) == 2
    err = capsys.readouterr().err
    assert "--batch-size: not used by --runtime llama-bench" in err


def test_cli_llama_bench_missing_binary_is_one_line(tiny, capsys, monkeypatch, tmp_path):
    from greenllm.cli import main

    monkeypatch.setenv("GREENLLM_LLAMA_BENCH", str(tmp_path / "absent"))
    assert main(["bench", str(tiny[0]), "--runtime", "llama-bench", "--meter", "estimate"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "GREENLLM_LLAMA_BENCH" in err and "Traceback" not in err


# --- the real binaries -------------------------------------------------------------------------


@_needs("llama-server")
def test_real_server_generates_what_llama_cpp_in_process_does(tiny):
    from greenllm.runtimes.llamaserver import LlamaServerRuntime

    path, tok = tiny
    rt = LlamaServerRuntime(path, threads=1)
    pid = rt.proc.pid
    try:
        outs = [rt.run_request(_batch(tok, t), MAX_NEW_TOKENS) for t in PROMPTS]
        assert rt.build_info  # b<number>-<commit>
    finally:
        rt.close()
    assert _gone(pid)
    for out in outs:
        assert out["new_tokens"] == MAX_NEW_TOKENS
        t = out["server_timings"]
        assert t["predicted_n"] == MAX_NEW_TOKENS and t["prompt_n"] == out["prompt_tokens"]
        assert t["prompt_ms"] > 0 and t["predicted_ms"] > 0
    try:
        from greenllm.runtimes.llamacpp import LlamaCppRuntime

        ref = LlamaCppRuntime(path, threads=1)
    except MissingDependencyError:
        return
    try:
        for text, out in zip(PROMPTS, outs):
            want = ref.run_request(_batch(tok, text), MAX_NEW_TOKENS)["tokens"][0].tolist()
            got = out["tokens"][0].tolist()
            if out["streamed_tokens"] == MAX_NEW_TOKENS:
                assert got == want, text
            else:  # tokens inside a UTF-8 character were not streamed: a subsequence
                it = iter(want)
                assert all(t in it for t in got), (text, got, want)
    finally:
        ref.close()


@_needs("llama-server")
def test_real_server_port_in_use(tiny, tmp_path):
    from greenllm.runtimes.llamaserver import LlamaServerRuntime

    with _busy_port() as s:
        with pytest.raises(UnsupportedError, match="could not bind.*in use"):
            LlamaServerRuntime(tiny[0], port=s.getsockname()[1], log_path=tmp_path / "s.log")


@_needs("llama-server")
def test_real_server_with_a_broken_file_fails_with_its_log(tiny, tmp_path):
    from greenllm.runtimes.llamaserver import LlamaServerRuntime

    data = tiny[0].read_bytes()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(data[: len(data) - 4096])
    with pytest.raises(ModelError, match="while starting; log .*load"):
        LlamaServerRuntime(broken, log_path=tmp_path / "s.log")


@_needs("llama-bench")
def test_real_llama_bench_in_the_window(tiny):
    from greenllm.runtimes.llamabench import llama_bench

    res = llama_bench(tiny[0], **BENCH_ARGS, meters=["estimate"], hz=20.0)
    assert res["build_commit"] and res["build_number"] is not None
    assert res["gen_tokens_per_s"] > 0 and res["prompt_tokens_per_s"] > 0
    assert res["threads"] == 1 and res["repetitions"] == BENCH_ARGS["repetitions"]
    assert res["energy_j"] > 0 and res["energy_per_token_j"] > 0
    assert 0 < res["llama_bench_busy_s"] < res["duration_s"]


def test_recording_is_small_and_names_its_build(recording):
    assert RECORDING.stat().st_size < 64 * 1024
    assert recording["recorded_with"]["llama-server"]
    assert os.path.basename(recording["bench"]["rows"][0]["model_filename"]) == "tiny.gguf"
