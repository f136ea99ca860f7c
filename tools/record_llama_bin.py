"""Record what the real llama-server and llama-bench answer for the tiny test model, into
tests/data/llama_bin/recording.json, which tests/data/llama_bin/fake_llama.py replays so the
llama-server / llama-bench tests run where the binaries are not built.

    make llama-tools && python tools/record_llama_bin.py

The model is the tests' tiny Llama (``tiny_causal_lm(0, vocab_size=320)`` with
``tiny_bpe_tokenizer()``) exported to GGUF Q8_0 by greenllm; the prompts are
tests/test_runtimes_external.py's PROMPTS and MAX_NEW_TOKENS (imported from there).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "llama_bin" / "recording.json"
PROPS_KEYS = ("build_info", "total_slots", "model_alias", "modalities")


def main() -> int:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_runtimes_external import BENCH_ARGS, MAX_NEW_TOKENS, PROMPTS, tiny_gguf

    from greenllm.runtimes.llamabench import llama_bench_command, run_llama_bench
    from greenllm.runtimes.llamabin import find_binary
    from greenllm.runtimes.llamaserver import LlamaServerRuntime, completion_body

    with tempfile.TemporaryDirectory() as tmp:
        gguf, tok = tiny_gguf(Path(tmp))
        rt = LlamaServerRuntime(gguf, threads=1)
        try:
            log = rt.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
            conn = http.client.HTTPConnection(rt.host, rt.port)
            conn.request("GET", "/props")
            props = json.loads(conn.getresponse().read())
            completions = []
            for text in PROMPTS:
                ids = tok(text)["input_ids"]
                body = completion_body(ids, MAX_NEW_TOKENS)
                headers = {"Content-Type": "application/json"}
                conn = http.client.HTTPConnection(rt.host, rt.port)  # closed after a stream
                conn.request("POST", "/completion", json.dumps(body), headers)
                resp = conn.getresponse()
                events = [
                    line[6:].decode().strip()
                    for line in resp.read().splitlines()
                    if line.startswith(b"data: ")
                ]
                completions.append({"request": body, "events": events})
        finally:
            rt.close()
        bench_cmd = llama_bench_command(find_binary("llama-bench"), gguf, **BENCH_ARGS)
        rows = run_llama_bench(bench_cmd)
        # what the server logs when the model cannot load: a file cut short in its tensor data
        broken = Path(tmp) / "broken.gguf"
        data = gguf.read_bytes()
        broken.write_bytes(data[: len(data) - 4096])
        proc = subprocess.run(
            [*rt.cmd[:2], str(broken), *rt.cmd[3:]], capture_output=True, text=True, timeout=120
        )
        load_error = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()][-6:]
    listening = [ln for ln in log if "listening on" in ln]
    head = [ln for ln in log[:12] if "listening on" not in ln]
    rec = {
        "recorded_with": {"llama-server": props.get("build_info"), "command": rt.cmd[1:]},
        "server": {
            "log_head": head,
            "listening_line": listening[0] if listening else None,
            "load_error_log": load_error,
            "load_error_exit_code": proc.returncode,
            "props": {k: props[k] for k in PROPS_KEYS if k in props},
            "completions": completions,
        },
        "bench": {"command": bench_cmd[1:], "rows": rows},
    }
    text = json.dumps(rec, indent=1).replace(tmp, "<tmp>")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
