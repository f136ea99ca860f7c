"""Runtimes as a first-class choice: bench and the log-likelihood evaluators run on llama.cpp
and ONNX Runtime through the same code paths as torch; the export step's file is the one
they run; ONNX export reloads in ONNX Runtime with the torch model's logits.

ONNX tolerances (max |logit difference| over max |logit|, random tiny Llama): fp32 1e-4 (the
same float32 arithmetic), int8 5e-2 (weights int8 per channel, activations int8 per call).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from greenllm.bench import Workload, bench
from greenllm.errors import ConfigError, UnknownNameError, UnsupportedError
from greenllm.evals.base import evaluate
from greenllm.export import export_model
from greenllm.runtimes import open_runtime
from greenllm.testing import tiny_bpe_tokenizer, tiny_causal_lm

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
HAVE_ORT = all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx", "onnxscript"))
needs_llama = pytest.mark.skipif(
    not HAVE_LLAMA,
    reason="llama-cpp-python is not installed (pip install llama-cpp-python, or "
    "pip install 'greenllm[llamacpp]'; it compiles llama.cpp with cmake and g++)",
)
needs_ort = pytest.mark.skipif(
    not HAVE_ORT,
    reason="onnxruntime / onnx / onnxscript are not installed (pip install 'greenllm[onnx]')",
)
ONNX_TOLERANCE = {"fp32": 1e-4, "int8": 5e-2}
PROMPTS = ["The quick brown fox", "Energy per token is measured", "Compression trades accuracy"]


@pytest.fixture(scope="module")
def pair():
    return tiny_causal_lm(0, vocab_size=320).eval(), tiny_bpe_tokenizer()


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


WL = dict(prompts=PROMPTS, max_new_tokens=6, warmup=1, repeats=2, min_window_s=0)


def test_workload_names_a_known_runtime():
    with pytest.raises(UnknownNameError, match="did you mean 'llama.cpp'"):
        Workload(runtime="llama.cp").validate()
    with pytest.raises(ConfigError, match="threads: must be >= 1"):
        Workload(threads=0).validate()


def test_torch_runtime_records_its_threads(pair):
    model, tok = pair
    before = torch.get_num_threads()
    r = bench(model, tok, Workload(**WL, threads=1), meters=["estimate"], hz=20.0)
    assert r.workload["runtime"] == "torch" and r.workload["threads"] == 1
    assert r.device["runtime"] == "torch" and r.device["runtime_threads"] == 1
    assert torch.get_num_threads() == before  # restored


@needs_llama
def test_bench_through_llama_cpp_measures_the_exported_file(pair, tmp_path):
    model, tok = pair
    rep = export_model(model, tok, "gguf", "q8_0", tmp_path / "m.gguf")
    torch_r = bench(model, tok, Workload(**WL), meters=["estimate"], hz=20.0)
    r = bench(model, tok, Workload(**WL, runtime="llama.cpp", threads=1), meters=["estimate"])
    assert r.workload["runtime"] == "llama.cpp"
    assert r.device["runtime"] == "llama.cpp" and r.device["runtime_threads"] == 1
    assert r.device["runtime_artifact"] == rep.path  # the recorded export, not a new one
    assert r.metrics["size_bytes"] == rep.size_bytes < torch_r.metrics["size_bytes"]
    assert r.metrics["params"] == torch_r.metrics["params"]
    assert all(row["output_tokens"] == row["passes"] * 3 * 6 for row in r.per_repeat)
    for key in ("ttft_s", "tpot_s", "decode_tokens_per_s", "energy_per_token_j"):
        assert r.metrics[key] > 0
    # the path of a .gguf file is a model too
    again = bench(rep.path, tok, Workload(**WL, runtime="llama.cpp"), meters=["estimate"])
    assert again.device["runtime_artifact"] == rep.path


@needs_llama
def test_batches_of_several_prompts_are_refused_by_llama_cpp(pair, tmp_path):
    model, tok = pair
    path = export_model(model, tok, "gguf", "f16", tmp_path / "m.gguf").path
    with pytest.raises(UnsupportedError, match="batch_size: the llama.cpp runtime"):
        bench(
            path, tok, Workload(**{**WL, "batch_size": 2}, runtime="llama.cpp"), meters=["estimate"]
        )


@needs_llama
def test_perplexity_and_choice_through_llama_cpp_agree_with_torch(pair, tmp_path):
    model, tok = pair
    path = export_model(model, tok, "gguf", "f32", tmp_path / "m.gguf").path
    text = tmp_path / "text.txt"
    text.write_text("\n".join(PROMPTS + [" ".join(PROMPTS) * 3]))
    kw = dict(data=str(text), format="lines", max_length=24)
    ppl_t = evaluate(model, tok, "perplexity", **kw)
    ppl_l = evaluate(path, tok, "perplexity", **kw, runtime="llama.cpp")
    assert ppl_l.settings["runtime"]["runtime"] == "llama.cpp"
    assert ppl_l.metrics["tokens"] == ppl_t.metrics["tokens"]
    assert ppl_l.metrics["perplexity"] == pytest.approx(ppl_t.metrics["perplexity"], rel=1e-3)
    kw = dict(data="builtin:choice-sample", limit=12)
    ch_t = evaluate(model, tok, "choice", **kw)
    ch_l = evaluate(path, tok, "choice", **kw, runtime="llama.cpp", threads=1)
    assert ch_l.n == ch_t.n == 12
    assert ch_l.metrics["acc"] == ch_t.metrics["acc"]
    assert ch_l.metrics["acc_norm"] == ch_t.metrics["acc_norm"]


@needs_llama
def test_scoring_reuses_a_shared_prefix_without_changing_scores(pair, tmp_path):
    model, tok = pair
    path = export_model(model, tok, "gguf", "f32", tmp_path / "m.gguf").path
    rt, _ = open_runtime("llama.cpp", path, threads=1)
    try:
        ctx = tok("The quick brown fox jumps over")["input_ids"]
        a, b = ctx + tok(" the lazy dog")["input_ids"], ctx + tok(" energy")["input_ids"]
        fresh = [rt.score_tokens(a, 3)]
        rt._clear()
        fresh.append(rt.score_tokens(b, 1))
        rt._clear()
        reused = [rt.score_tokens(a, 3), rt.score_tokens(b, 1)]  # b reuses a's cached prefix
        np.testing.assert_allclose([f[0] for f in reused], [f[0] for f in fresh], rtol=1e-5)
        ref = torch.log_softmax(torch.from_numpy(_logits(model, b)[:-1]), -1)
        assert reused[1][0] == pytest.approx(float(ref[-1, b[-1]]), rel=1e-3)
    finally:
        rt.close()


def test_evaluators_that_generate_refuse_other_runtimes(pair):
    model, tok = pair
    with pytest.raises(UnsupportedError, match="runs on runtime torch only"):
        evaluate(model, tok, "squad", data="builtin:squad-sample", runtime="onnxruntime")


@needs_llama
def test_the_export_step_records_the_file_bench_runs(pair, tmp_path):
    import copy

    from greenllm.steps import compress

    model, tok = pair
    model = copy.deepcopy(model)
    out = tmp_path / "step.gguf"
    model, results = compress(
        model, [{"export": {"format": "gguf", "type": "q4_0", "out": str(out)}}], tokenizer=tok
    )
    stats = results[0].stats["export"]
    assert stats["path"] == str(out) and stats["types"]["Q4_0"] == 14
    assert results[0].size_bytes_after == results[0].size_bytes_before  # model unchanged
    r = bench(model, tok, Workload(**WL, runtime="llama.cpp"), meters=["estimate"])
    assert r.device["runtime_artifact"] == str(out)
    assert r.device["runtime_artifact_type"] == "MOSTLY_Q4_0"


# --------------------------------------------------------------------------- ONNX Runtime
@pytest.fixture(scope="module")
def onnx_files(pair, tmp_path_factory):
    if not HAVE_ORT:
        pytest.skip(
            "onnxruntime / onnx / onnxscript are not installed (pip install 'greenllm[onnx]')"
        )
    model, tok = pair
    root = tmp_path_factory.mktemp("onnx")
    return {t: export_model(model, tok, "onnx", t, root / t / "model.onnx") for t in ONNX_TOLERANCE}


@needs_ort
@pytest.mark.parametrize("qtype", list(ONNX_TOLERANCE))
def test_onnx_runtime_logits_match_the_torch_model(pair, onnx_files, qtype):
    model, tok = pair
    rep = onnx_files[qtype]
    rt, _ = open_runtime("onnxruntime", rep.path, threads=1)
    for prompt in PROMPTS:
        ids = tok(prompt)["input_ids"]
        ref = _logits(model, ids)
        err = np.abs(rt.logits(ids) - ref).max() / np.abs(ref).max()
        assert err < ONNX_TOLERANCE[qtype], f"{qtype}: relative logit error {err:.2e}"
    if qtype == "int8":
        assert rep.types.get("INT8", 0) >= 7 * model.config.num_hidden_layers
        assert rep.size_bytes < onnx_files["fp32"].size_bytes


@needs_ort
def test_onnx_decoding_with_past_is_torchs_greedy_decoding(pair, onnx_files):
    model, tok = pair
    ids = tok(PROMPTS[1])["input_ids"]
    batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids))}
    with torch.no_grad():
        want = model.generate(
            batch["input_ids"], max_new_tokens=10, min_new_tokens=10, do_sample=False
        )[0, len(ids) :].tolist()
    rt, _ = open_runtime("onnxruntime", onnx_files["fp32"].path)
    out = rt.run_request(batch, 10)
    assert out["tokens"][0].tolist() == want and out["decode_tokens"] == 9


@needs_ort
def test_bench_and_eval_through_onnx_runtime(pair, onnx_files, tmp_path):
    model, tok = pair
    path = onnx_files["fp32"].path
    r = bench(path, tok, Workload(**WL, runtime="onnxruntime", threads=1), meters=["estimate"])
    assert r.device["runtime"] == "onnxruntime" and r.device["runtime_threads"] == 1
    assert r.metrics["size_bytes"] == onnx_files["fp32"].size_bytes
    text = tmp_path / "text.txt"
    text.write_text("\n".join(PROMPTS))
    kw = dict(data=str(text), format="lines", max_length=16)
    ppl_t = evaluate(model, tok, "perplexity", **kw)
    ppl_o = evaluate(path, tok, "perplexity", **kw, runtime="onnxruntime")
    assert ppl_o.metrics["perplexity"] == pytest.approx(ppl_t.metrics["perplexity"], rel=1e-4)


# --------------------------------------------------------------------------- CLI
@needs_llama
def test_cli_export_then_bench_and_eval_in_llama_cpp(tmp_path, run_cli):
    from greenllm.models import save

    model, tok = tiny_causal_lm(0, vocab_size=320).eval(), tiny_bpe_tokenizer()
    src = str(save(model, tmp_path / "model", tok))
    out = tmp_path / "m.gguf"
    code, stdout, _ = run_cli(
        "export", src, "--format", "gguf", "--type", "q8_0", "--out", str(out), "--json"
    )
    assert code == 0
    rep = json.loads(stdout)
    assert rep["path"] == str(out) and rep["types"]["Q8_0"] == 16 and rep["bits_per_weight"] > 8
    code, _, err = run_cli("export", src, "--format", "gguf", "--type", "q8_0", "--out", str(out))
    assert code == 2 and "already exists" in err
    code, _, err = run_cli("export", src, "--format", "gguf", "--type", "q4_k_m")
    assert code == 2 and "q4_k_m" in err and "q4_0" in err
    code, stdout, _ = run_cli(
        "bench",
        str(out),
        "--runtime",
        "llama.cpp",
        "--threads",
        "1",
        "--max-new-tokens",
        "4",
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--limit",
        "2",
        "--meter",
        "estimate",
        "--json",
    )
    assert code == 0
    res = json.loads(stdout)
    assert res["device"]["runtime"] == "llama.cpp" and res["workload"]["runtime"] == "llama.cpp"
    code, stdout, _ = run_cli(
        "eval",
        str(out),
        "--task",
        "perplexity",
        "--data",
        "builtin:wiki-sample",
        "--limit",
        "1",
        "--set",
        "max_length=32",
        "--runtime",
        "llama.cpp",
        "--json",
    )
    assert code == 0 and json.loads(stdout)["settings"]["runtime"]["runtime"] == "llama.cpp"
