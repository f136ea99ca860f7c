"""The fidelity evaluator: KL(baseline || variant) over the baseline's top-k plus a tail
bucket, top-1 agreement and the perplexity ratio, against a stored baseline reference."""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")

from greenllm.config import parse_config  # noqa: E402
from greenllm.errors import DataError  # noqa: E402
from greenllm.evals.fidelity import (  # noqa: E402
    FidelityConfig,
    build_reference,
    run,
    tail_bucket_kl,
)
from greenllm.testing import tiny_model_and_tokenizer  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog while the baker kneads the dough. " * 8


def _cfg(tmp_path, **kw):
    (tmp_path / "text.txt").write_text(TEXT)
    spec = {"data": str(tmp_path / "text.txt"), "max_tokens": 200, "window": 64, "top_k": 8}
    return parse_config(FidelityConfig, {**spec, **kw}, "fidelity")


def test_an_identical_model_has_zero_kl_and_full_agreement(tmp_path):
    model, tok = tiny_model_and_tokenizer(0)
    cfg = _cfg(tmp_path)
    ref = build_reference(model, tok, cfg, tmp_path / "ref.safetensors")
    res = run(copy.deepcopy(model), tok, cfg, reference=ref)
    m = res.metrics
    assert m["kl_mean"] == pytest.approx(0.0, abs=1e-7) and m["kl_max"] < 1e-6
    assert m["top1_agreement"] == 1.0
    assert m["perplexity_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert m["tokens"] == 200 - 4  # 4 windows (64, 64, 64, 8), each predicts n - 1 tokens
    assert 0 < m["baseline_tail_mass"] < 1  # a random model spreads mass past its top 8


def test_a_perturbed_model_diverges(tmp_path):
    model, tok = tiny_model_and_tokenizer(0)
    cfg = _cfg(tmp_path)
    ref = build_reference(model, tok, cfg, tmp_path / "ref.safetensors")
    noisy = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in noisy.model.layers.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    m = run(noisy, tok, cfg, reference=ref).metrics
    assert m["kl_mean"] > 1e-3 and m["kl_p99"] >= m["kl_median"] > 0
    assert m["top1_agreement"] < 1.0
    assert m["perplexity_ratio"] != pytest.approx(1.0, abs=1e-4)
    # the reference's perplexity is the baseline's own on the same tokens
    base = run(model, tok, cfg, reference=ref).metrics
    assert m["baseline_perplexity"] == pytest.approx(base["perplexity"], rel=1e-6)


def test_tail_bucket_kl_is_exact_with_the_whole_vocabulary_and_a_lower_bound_otherwise():
    g = torch.Generator().manual_seed(0)
    p = torch.log_softmax(torch.randn(5, 50, generator=g) * 2, -1)
    q = torch.log_softmax(torch.randn(5, 50, generator=g) * 2, -1)
    full = (p.exp() * (p - q)).sum(-1)
    v, i = torch.topk(p, 50, dim=-1)
    exact, tail = tail_bucket_kl(v, q, i)
    torch.testing.assert_close(exact.float(), full, atol=1e-5, rtol=1e-5)
    assert float(tail.max()) < 1e-5
    v, i = torch.topk(p, 4, dim=-1)
    approx, tail = tail_bucket_kl(v, q, i)
    assert bool((approx <= full.double() + 1e-9).all()) and float(tail.min()) > 0
    # by hand for one row: top-4 terms plus the tail bucket
    pt, qt = v[0].double().exp(), q[0, i[0]].double().exp()
    want = float((pt * (pt.log() - qt.log())).sum())
    want += float((1 - pt.sum()) * math.log((1 - pt.sum()) / (1 - qt.sum())))
    assert float(approx[0]) == pytest.approx(want, rel=1e-9)


def test_reference_errors_are_clear(tmp_path):
    model, tok = tiny_model_and_tokenizer(0)
    cfg = _cfg(tmp_path)
    with pytest.raises(DataError, match="runner"):
        run(model, tok, cfg)  # reference: baseline outside a run
    with pytest.raises(DataError, match="does not exist"):
        run(model, tok, cfg, reference=tmp_path / "missing.safetensors")
    ref = build_reference(model, tok, cfg, tmp_path / "ref.safetensors")
    with pytest.raises(DataError, match="top_k"):
        run(model, tok, _cfg(tmp_path, top_k=4), reference=ref)
    # reference: PATH works without the hook
    again = run(model, tok, _cfg(tmp_path, reference=str(ref)))
    assert again.metrics["top1_agreement"] == 1.0


def test_the_runner_scores_every_variant_against_the_baseline(tmp_path):
    import json

    import yaml

    from greenllm.runner import run as run_recipe

    model, tok = tiny_model_and_tokenizer(0)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    (tmp_path / "text.txt").write_text(TEXT)
    recipe = {
        "schema_version": 1,
        "name": "tiny-fidelity",
        "model": {"id": str(tmp_path / "model")},
        "variants": {"mag50": [{"prune": {"method": "magnitude", "sparsity": 0.5}}]},
        "evals": [{"fidelity": {"data": "text.txt", "max_tokens": 96, "window": 32, "top_k": 8}}],
        "workload": {"prompts": ["Hello"], "max_new_tokens": 2, "warmup": 0, "repeats": 1},
        "meters": ["estimate"],
        "carbon": {"intensity_g_per_kwh": 400.0},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    run_recipe(path, tmp_path / "out", progress=False)
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    by = {v["name"]: v["evals"][0] for v in doc["variants"]}
    assert by["baseline"]["task"] == "fidelity"
    assert by["baseline"]["kl_mean"] == pytest.approx(0.0, abs=1e-7)
    assert by["baseline"]["top1_agreement"] == 1.0
    # a random tiny model is near uniform: small but clearly non-zero divergence
    assert by["mag50"]["kl_mean"] > 1e-6
    assert by["mag50"]["perplexity_ratio"] != pytest.approx(1.0, abs=1e-6)
    assert len(list((tmp_path / "out" / "references").glob("fidelity-*.safetensors"))) == 1
