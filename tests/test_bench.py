"""bench(): workload parsing, statistics, the timed decode loop and metered metrics."""

from __future__ import annotations

import math

import pytest

import greenllm
from greenllm.bench import (
    Workload,
    bench,
    load_prompts,
    mean_ci95,
    measure_copy_bandwidth,
    parse_workload,
    t_critical_95,
    weight_bytes_per_token,
)
from greenllm.config import parse_config, to_dict
from greenllm.errors import ConfigError, DataError, UnknownNameError, UnsupportedError
from greenllm.meters.estimate import EstimateMeter
from greenllm.results import BenchResult, EnergyReport

KEYS = (
    "ttft_s",
    "tpot_s",
    "e2e_latency_s",
    "prefill_tokens_per_s",
    "decode_tokens_per_s",
    "energy_per_request_j",
    "energy_per_token_j",
    "tokens_per_wh",
    "edp_js",
    "edp_js_per_b_params",
    "wh_per_b_params",
    "peak_memory_bytes",
    "size_bytes",
    "gpu_util_mean_pct",
    "roofline_fraction",
    "cuda_max_allocated_bytes",
)
PROMPTS = ["The cat sat on", "Energy is", "A much longer prompt than the others, to pad"]


def test_workload_round_trip_and_defaults():
    w = parse_config(
        Workload,
        {
            "prompts": ["a", "b"],
            "max_new_tokens": 8,
            "batch_size": 2,
            "warmup": 0,
            "repeats": 3,
            "min_window_s": 0,
            "limit": 1,
        },
    )
    assert parse_config(Workload, to_dict(w)) == w
    assert parse_workload({}).prompts == "builtin:prompts"


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"prompts": []}, "no prompts"),
        ({"prompts": ["  ", ""]}, "no prompts"),
        ({"prompts": ""}, "no prompts"),
        ({"repeats": 0, "min_window_s": 0}, "repeats: 0 is outside 1..100000"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"batch_sise": 2}, "did you mean 'batch_size'"),
    ],
)
def test_workload_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        parse_workload(bad)


def test_prompt_sources(tmp_path):
    builtin = load_prompts("builtin:prompts")
    assert len(builtin) == 20 and all(p.strip() for p in builtin)
    f = tmp_path / "p.txt"
    f.write_text("first\n\n second \n")
    assert load_prompts(str(f)) == ["first", "second"]
    j = tmp_path / "p.jsonl"
    j.write_text('{"prompt": "x"}\n{"text": "y"}\n')
    assert load_prompts(str(j), limit=1) == ["x"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ConfigError, match="no prompts in"):
        load_prompts(str(empty))
    with pytest.raises(DataError, match="does not exist"):
        load_prompts(str(tmp_path / "missing.txt"))
    with pytest.raises(DataError, match="did you mean 'builtin:prompts'"):
        load_prompts("builtin:prompt")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": 1}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1"):
        load_prompts(str(bad))


def test_ci95_on_known_numbers():
    mean, half = mean_ci95([1.0, 2.0, 3.0, 4.0, 5.0])
    # s = sqrt(2.5), t_{0.975,4} = 2.776
    assert mean == 3.0 and half == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5))
    assert mean_ci95([7.0]) == (7.0, None)
    assert mean_ci95([None, None]) == (None, None)
    assert mean_ci95([2.0, 2.0, 2.0])[1] == 0.0
    assert t_critical_95(1) == 12.706 and t_critical_95(30) == 2.042
    assert 2.000 < t_critical_95(50) < 2.021 and t_critical_95(10**6) == pytest.approx(
        1.96, abs=1e-3
    )


def test_weight_bytes_per_token_tied_and_untied():
    from greenllm.models import model_size_bytes
    from greenllm.testing import tiny_causal_lm

    untied = tiny_causal_lm(0)
    emb = untied.get_input_embeddings().weight
    assert weight_bytes_per_token(untied) == model_size_bytes(untied) - emb.numel() * 4
    tied = tiny_causal_lm(0, tie_word_embeddings=True)
    assert weight_bytes_per_token(tied) == model_size_bytes(tied)


def test_copy_bandwidth_probe_is_positive():
    bw = measure_copy_bandwidth("cpu", size_bytes=8 * 1024**2, repeats=2)
    assert math.isfinite(bw) and bw > 1e8  # any machine copies more than 0.1 GB/s


def test_decode_loop_matches_hf_generate_and_batching(tiny):
    """The manual prefill+decode loop is greedy decoding: same tokens as generate(), and a
    left-padded batch gives each prompt the tokens it gets alone."""
    import torch

    from greenllm.bench import _tokenize_batches
    from greenllm.decode import forward_kwargs as _forward_kwargs
    from greenllm.decode import run_request as _run_request

    model, tok = tiny
    dev = torch.device("cpu")
    acc = _forward_kwargs(model)
    n = 6
    with torch.inference_mode():
        (batch,) = _tokenize_batches(tok, PROMPTS[:2], 2, dev)
        both = _run_request(model, batch, n, dev, acc)
        for i, p in enumerate(PROMPTS[:2]):
            (single,) = _tokenize_batches(tok, [p], 1, dev)
            alone = _run_request(model, single, n, dev, acc)
            assert alone["tokens"][0].tolist() == both["tokens"][i].tolist()
            ref = model.generate(
                **single,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
            assert ref[0, single["input_ids"].shape[1] :].tolist() == alone["tokens"][0].tolist()
    assert both["new_tokens"] == 2 * n and both["decode_tokens"] == 2 * (n - 1)
    assert both["prompt_tokens"] == sum(len(tok(p)["input_ids"]) for p in PROMPTS[:2])
    assert tok.padding_side == "right"  # restored


@pytest.mark.parametrize("variant", ["fp32", "int8_weight"])
def test_compiled_static_cache_decode_gives_the_eager_tokens(tiny, variant):
    """The torch.compile'd static-cache loop decodes exactly what the eager loop decodes, for a
    left-padded batch and a single prompt, and a second run reuses the compiled step. The
    int8_weight model (head and tied embedding quantized too) compiles through the
    greenllm::int8pack_mm custom op."""
    import copy

    import torch

    from greenllm.bench import _tokenize_batches
    from greenllm.decode import CompiledDecoder, forward_kwargs, run_request
    from greenllm.steps import compress

    model, tok = tiny
    if variant != "fp32":
        model, _ = compress(
            copy.deepcopy(model), greenllm.Quantize(method=variant, ignore=[]), tokenizer=tok
        )
    dev = torch.device("cpu")
    n = 5
    with torch.inference_mode():
        batches = _tokenize_batches(tok, PROMPTS[:3], 2, dev)
        dec = CompiledDecoder(model, max(b["input_ids"].shape[1] for b in batches) + n)
        for b in batches:
            eager = run_request(model, b, n, dev, forward_kwargs(model))
            fast = dec.run(b, n, dev)
            assert fast["tokens"].tolist() == eager["tokens"].tolist()
            assert (
                fast["decode_tokens"] == eager["decode_tokens"] == b["input_ids"].shape[0] * (n - 1)
            )
        assert CompiledDecoder(model, 64).step is dec.step  # compiled once per class
        # a copy with other weights decodes with its own weights, not the original's
        other = copy.deepcopy(model)
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5) if p.is_floating_point() else None
        b = batches[0]
        mine = CompiledDecoder(other, dec.max_cache_len).run(b, n, dev)["tokens"].tolist()
        assert mine == run_request(other, b, n, dev, forward_kwargs(other))["tokens"].tolist()
        with pytest.raises(UnsupportedError, match="exceed the static cache"):
            CompiledDecoder(model, 4).run(batches[0], n, dev)


def test_a_decode_step_that_cannot_compile_is_one_clear_error(tiny, monkeypatch):
    import torch
    from torch._dynamo.exc import TorchRuntimeError

    from greenllm import decode
    from greenllm.bench import _tokenize_batches

    def no_compiler(*args, **kwargs):
        raise TorchRuntimeError("InvalidCxxCompiler: no working C++ compiler found")

    model, tok = tiny
    monkeypatch.setitem(decode._STEPS, type(model), no_compiler)
    (batch,) = _tokenize_batches(tok, PROMPTS[:1], 1, torch.device("cpu"))
    with (
        torch.inference_mode(),
        pytest.raises(
            UnsupportedError, match="could not compile .*C\\+\\+ compiler.*compile: false"
        ),
    ):
        decode.CompiledDecoder(model, 64).run(batch, 4, torch.device("cpu"))


def test_bench_tiny_all_metrics(tiny):
    model, tok = tiny
    meter = EstimateMeter(tdp_w=20.0, idle_w=20.0)  # constant 20 W: a labelled estimate
    r = bench(
        model,
        tok,
        {
            "prompts": PROMPTS,
            "max_new_tokens": 4,
            "batch_size": 1,
            "warmup": 1,
            "repeats": 3,
            "min_window_s": 0,
        },
        meters=[meter],
        hz=50.0,
        bandwidth_bytes_per_s=10e9,
    )
    assert isinstance(r, BenchResult) and isinstance(r.energy, EnergyReport)
    for k in KEYS:
        assert k in r.metrics, k
    assert r.meter == "estimate" and r.estimated is True and r.repeats == 3
    assert r.metrics["gpu_util_mean_pct"] is None and r.metrics["cuda_max_allocated_bytes"] is None
    assert len(r.per_repeat) == 3
    for rep in r.per_repeat:
        assert rep["output_tokens"] == rep["passes"] * 3 * 4  # EOS ignored: max_new_tokens each
        n = rep["passes"]  # the prompts repeat inside the window until it is long enough
        assert rep["energy_per_token_j"] == pytest.approx(rep["energy_j"] / (12 * n))
        assert rep["energy_per_request_j"] == pytest.approx(rep["energy_j"] / (3 * n))
        assert rep["tokens_per_wh"] == pytest.approx(12 * n * 3600 / rep["energy_j"])
        assert rep["edp_js"] == pytest.approx(rep["energy_per_request_j"] * rep["e2e_latency_s"])
        assert rep["mean_power_w"] == pytest.approx(20.0, rel=0.05)
        assert rep["e2e_latency_s"] == pytest.approx(rep["ttft_s"] + 3 * rep["tpot_s"], rel=1e-6)
        # roofline: 3 decode steps per request read the weights once each at 10 GB/s
        ideal = n * 3 * 3 * r.metrics["weight_bytes_per_token"] / 10e9
        assert rep["roofline_fraction"] == pytest.approx(
            ideal / (n * 3 * 3 / rep["decode_tokens_per_s"]), rel=1e-6
        )
    assert r.per_repeat[-1]["energy_j"] == pytest.approx(r.energy.energy_j)
    mean, half = mean_ci95([x["energy_per_token_j"] for x in r.per_repeat])
    assert r.metrics["energy_per_token_j"] == pytest.approx(mean)
    assert r.ci95["energy_per_token_j"] == pytest.approx(half)
    from greenllm.models import model_size_bytes, param_count

    assert r.metrics["size_bytes"] == model_size_bytes(model)
    assert r.metrics["edp_js_per_b_params"] == pytest.approx(
        r.metrics["edp_js"] / (param_count(model) / 1e9)
    )
    assert r.metrics["peak_memory_bytes"] > 10 * 1024**2
    assert r.device["bandwidth_source"] == "given"
    js = r.to_json()
    assert js["estimated"] is True and "ttft_s_ci95" in js and "edp_js_ci95" in js
    assert BenchResult.from_dict(r.to_dict()).metrics == r.metrics


def test_bench_batched_and_profile_bandwidth(tiny):
    model, tok = tiny
    r = bench(
        model,
        tok,
        Workload(prompts=PROMPTS, max_new_tokens=3, batch_size=2, warmup=0, repeats=2),
        meters=["estimate"],
        hz=50.0,
        profile="jetson-orin-nano-8gb",
    )
    assert r.workload["n_batches"] == 2 and r.workload["n_prompts"] == 3
    assert all(rep["output_tokens"] == 9 * rep["passes"] for rep in r.per_repeat)
    assert r.device["bandwidth_source"] == "profile:jetson-orin-nano-8gb"
    assert r.device["memory_bandwidth_bytes_per_s"] == 68e9
    assert r.metrics["decode_tokens_per_s"] > 0


def test_single_token_requests_have_no_decode_metrics(tiny):
    model, tok = tiny
    r = bench(
        model,
        tok,
        {"prompts": ["hi"], "max_new_tokens": 1, "warmup": 0, "repeats": 1, "min_window_s": 0},
        meters=["estimate"],
        hz=0.0,
        bandwidth_bytes_per_s=1e9,
    )
    assert r.metrics["tpot_s"] is None and r.metrics["decode_tokens_per_s"] is None
    assert r.metrics["roofline_fraction"] is None and r.ci95["ttft_s"] is None
    assert r.per_repeat[0]["output_tokens"] == 1


def test_bench_bad_inputs(tiny):
    model, tok = tiny
    with pytest.raises(ConfigError, match="no prompts"):
        bench(model, tok, {"prompts": []}, meters=["estimate"])
    with pytest.raises(UnknownNameError, match="did you mean"):
        bench(model, tok, {"prompts": ["x"]}, meters=["estimat"])
    with pytest.raises(UnknownNameError, match="device profile"):
        bench(
            model,
            tok,
            {"prompts": ["x"], "repeats": 1, "warmup": 0, "min_window_s": 0},
            meters=["estimate"],
            profile="raspberry-pi",
        )


@pytest.mark.gpu
def test_bench_on_cuda_reports_cuda_memory(tiny):
    model, tok = tiny
    r = bench(
        model,
        tok,
        {"prompts": PROMPTS[:2], "max_new_tokens": 3, "warmup": 1, "repeats": 2, "min_window_s": 0},
        meters=["estimate"],
        device="cuda",
    )
    assert r.device["torch_device"].startswith("cuda")
    assert r.metrics["cuda_max_allocated_bytes"] > 0


@pytest.mark.slow
def test_bench_smollm2_few_tokens(smollm2_fresh):
    model, tok = smollm2_fresh
    r = bench(
        model,
        tok,
        {
            "prompts": "builtin:prompts",
            "limit": 1,
            "max_new_tokens": 3,
            "warmup": 0,
            "repeats": 2,
            "min_window_s": 0,
        },
        meters=["estimate"],
    )
    assert r.metrics["params"] == pytest.approx(134.5e6, rel=0.01)
    assert r.metrics["size_bytes"] == pytest.approx(134.5e6 * 4, rel=0.01)
    assert r.metrics["decode_tokens_per_s"] > 0  # no speed threshold: shared CI machines
    assert 0 < r.metrics["roofline_fraction"] < 5
    assert r.metrics["peak_memory_bytes"] > r.metrics["size_bytes"]
