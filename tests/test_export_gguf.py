"""GGUF export: file contents (names, types, sizes, zeros, int8 reuse) read back independently,
and the exported files loaded in llama.cpp (llama-cpp-python) with logits compared to the
PyTorch model that was exported, per type.

Tolerances, max |logit difference| over max |logit| on the prompts (random tiny Llama):
f32 1e-3 (the same weights; llama.cpp sums in another order), f16 5e-3, q8_0 3e-2 (blocks of
32, 8 bits), q4_0 0.2 (blocks of 32, 4 bits; the tiny model's logits are small, so 4-bit
rounding is a large share of them).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from greenllm.errors import UnsupportedError
from greenllm.export import export_model
from greenllm.export.gguf import permute_rows
from greenllm.export.gguf_read import inspect_gguf, read_header
from greenllm.testing import tiny_bpe_tokenizer, tiny_causal_lm, tiny_tokenizer

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(
    not HAVE_LLAMA,
    reason="llama-cpp-python is not installed (pip install llama-cpp-python, or "
    "pip install 'greenllm[llamacpp]'; it compiles llama.cpp with cmake and g++)",
)
TOLERANCE = {"f32": 1e-3, "f16": 5e-3, "q8_0": 3e-2, "q4_0": 0.2}
PROMPTS = ["The quick brown fox jumps over the lazy dog.", "Energy per token, 1234 J?"]


def bpe_tokenizer():
    return tiny_bpe_tokenizer()


def tiny_llama(seed, **kw):
    return tiny_causal_lm(seed, vocab_size=320, **kw).eval()


@pytest.fixture(scope="module")
def tiny_pair():
    torch.manual_seed(0)
    return tiny_llama(0), bpe_tokenizer()


@pytest.fixture(scope="module")
def exported(tiny_pair, tmp_path_factory):
    model, tok = tiny_pair
    root = tmp_path_factory.mktemp("gguf")
    return {t: export_model(model, tok, "gguf", t, root / f"tiny-{t}.gguf") for t in TOLERANCE}


def _dequantized(path, name):
    import gguf

    reader = gguf.GGUFReader(str(path))
    (t,) = [t for t in reader.tensors if t.name == name]
    return gguf.quants.dequantize(t.data, t.tensor_type).reshape(
        [int(d) for d in reversed(t.shape)]
    )


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def test_tensor_names_types_and_sizes(tiny_pair, exported):
    model, _ = tiny_pair
    cfg = model.config
    meta, tensors = read_header(exported["q8_0"].path)
    names = {t["name"] for t in tensors}
    assert {"token_embd.weight", "output_norm.weight", "output.weight"} <= names
    per_block = {
        "attn_norm",
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_norm",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    }
    assert {n.split(".")[2] for n in names if n.startswith("blk.0.")} == per_block
    assert meta["general.architecture"] == "llama"
    assert meta["llama.block_count"] == cfg.num_hidden_layers
    assert meta["llama.attention.head_count_kv"] == cfg.num_key_value_heads
    assert meta["llama.embedding_length"] == cfg.hidden_size
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    n = sum(p.numel() for p in model.parameters())
    for qtype, rep in exported.items():
        assert rep.n_weights == n
        # every matrix in its type; norms F32
        matrices = 2 + 7 * cfg.num_hidden_layers
        norms = 1 + 2 * cfg.num_hidden_layers
        assert rep.types["F32"] == (norms if qtype != "f32" else norms + matrices)
    assert exported["f16"].types["F16"] == 2 + 7 * cfg.num_hidden_layers
    assert exported["q8_0"].types["Q8_0"] == 2 + 7 * cfg.num_hidden_layers
    # q4_0: embedding and output head stay Q8_0, the block matrices Q4_0
    assert exported["q4_0"].types == {"F32": 5, "Q8_0": 2, "Q4_0": 14}
    # bits per weight from the bytes: Q8_0 is 34 bytes per 32 weights, Q4_0 18
    norm_w = sum(p.numel() for name, p in model.named_parameters() if "norm" in name)
    emb_w = model.get_input_embeddings().weight.numel() * 2
    q8_bytes = exported["q8_0"].type_bytes["Q8_0"]
    assert q8_bytes == (n - norm_w) // 32 * 34
    assert exported["q4_0"].type_bytes["Q4_0"] == (n - norm_w - emb_w) // 32 * 18
    assert exported["q8_0"].bits_per_weight == pytest.approx(
        8 * (q8_bytes + 4 * norm_w) / n, rel=1e-9
    )
    assert exported["f32"].bits_per_weight == 32.0
    sizes = [exported[t].size_bytes for t in ("f32", "f16", "q8_0", "q4_0")]
    assert sizes == sorted(sizes, reverse=True)


def test_a_tied_head_is_not_written_twice(tmp_path):
    model = tiny_llama(1, tie_word_embeddings=True)
    rep = export_model(model, bpe_tokenizer(), "gguf", "f16", tmp_path / "tied.gguf")
    names = {t["name"] for t in read_header(rep.path)[1]}
    assert "output.weight" not in names and "token_embd.weight" in names


def test_f32_reloads_in_transformers_with_the_same_logits(tiny_pair, exported):
    """transformers' own GGUF reader (which undoes llama.cpp's Q/K row order) gets the model
    back exactly: names, shapes, permutation and hyper-parameters are llama.cpp's."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    model, tok = tiny_pair
    path = Path(exported["f32"].path)
    again = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    ids = tok(PROMPTS[0])["input_ids"]
    np.testing.assert_allclose(_logits(again, ids), _logits(model, ids), atol=1e-5)


def test_permutation_is_llama_cpps_interleaved_rope_order():
    # head of 4 rows: HF order [x0, x1 | y0, y1] (halves) -> llama.cpp [x0, y0, x1, y1]
    rows = np.arange(8).reshape(8, 1)
    assert permute_rows(rows, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


@pytest.mark.parametrize("qtype", ["f16", "q8_0", "q4_0"])
def test_pruned_zeros_stay_zero(tmp_path, qtype):
    model = tiny_llama(2)
    w = model.model.layers[0].mlp.down_proj.weight
    with torch.no_grad():
        w[:, ::2] = 0.0  # half of every row (pruned)
        w[3] = 0.0  # a whole row
    rep = export_model(model, bpe_tokenizer(), "gguf", qtype, tmp_path / "p.gguf")
    back = _dequantized(rep.path, "blk.0.ffn_down.weight")
    zero = (w == 0).numpy()
    assert (back[zero] == 0).all()
    assert (back[~zero] != 0).mean() > 0.9  # the rest is not zeroed away


def test_int8_weight_becomes_q8_0_with_its_own_int8_values(tmp_path):
    from greenllm.steps import compress

    model, tok = tiny_llama(3), bpe_tokenizer()
    model, _ = compress(model, ["quantize:method=int8_weight"])
    rep = export_model(model, tok, "gguf", "auto", tmp_path / "i8.gguf")
    assert rep.type == "q8_0"
    assert any(
        "int8_weight matrices written as Q8_0 with their own int8 values" in n for n in rep.notes
    )
    lin = model.model.layers[1].mlp.up_proj
    q, s = lin.weight_int8.float(), lin.weight_scale.half().float()
    np.testing.assert_array_equal(
        _dequantized(rep.path, "blk.1.ffn_up.weight"), (q * s[:, None]).numpy()
    )
    k = model.model.layers[0].self_attn.k_proj
    want = permute_rows((k.weight_int8.float() * k.weight_scale.half().float()[:, None]).numpy(), 2)
    np.testing.assert_array_equal(_dequantized(rep.path, "blk.0.attn_k.weight"), want)


def test_other_architectures_are_refused_naming_what_is_supported(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=259))
    with pytest.raises(UnsupportedError, match="supports the Llama family"):
        export_model(gpt2, bpe_tokenizer(), "gguf", "f16", tmp_path / "g.gguf")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_tokenizer_without_merges_is_refused(tmp_path):
    with pytest.raises(UnsupportedError, match="no BPE merges"):
        export_model(tiny_llama(5), tiny_tokenizer(), "gguf", "f16", tmp_path / "m.gguf")


def test_inspect_reads_any_gguf_file(exported):
    rep = inspect_gguf(exported["q4_0"].path)
    assert rep.type == "MOSTLY_Q4_0" and rep.types == exported["q4_0"].types


# --------------------------------------------------------------------------- llama.cpp
@needs_llama
@pytest.mark.parametrize("qtype", list(TOLERANCE))
def test_llama_cpp_logits_match_the_torch_model(tiny_pair, exported, qtype):
    from greenllm.runtimes.llamacpp import LlamaCppRuntime

    model, tok = tiny_pair
    rt = LlamaCppRuntime(exported[qtype].path, threads=1)
    try:
        for prompt in PROMPTS:
            ids = tok(prompt)["input_ids"]
            ref = _logits(model, ids)
            got = rt.logits(ids)
            assert got.shape == ref.shape
            err = np.abs(got - ref).max() / np.abs(ref).max()
            assert err < TOLERANCE[qtype], f"{qtype}: relative logit error {err:.2e}"
    finally:
        rt.close()


@needs_llama
def test_llama_cpp_generation_is_torchs_greedy_decoding(tiny_pair, exported):
    from greenllm.runtimes.llamacpp import LlamaCppRuntime

    model, tok = tiny_pair
    ids = tok(PROMPTS[1])["input_ids"]
    batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids))}
    with torch.no_grad():
        want = model.generate(
            batch["input_ids"], max_new_tokens=12, min_new_tokens=12, do_sample=False
        )[0, len(ids) :].tolist()
    rt = LlamaCppRuntime(exported["f32"].path, threads=1)
    try:
        out = rt.run_request(batch, 12)
    finally:
        rt.close()
    assert out["tokens"][0].tolist() == want
    assert out["new_tokens"] == 12 and out["decode_tokens"] == 11
    assert out["prompt_tokens"] == len(ids) and out["batch"] == 1
    assert 0 < out["prefill_s"] < out["e2e_s"] and out["decode_s"] > 0
    perf = out["llama_perf"]  # llama.cpp's own counters saw the same work
    assert perf["n_p_eval"] == len(ids) and perf["n_eval"] == 11
    assert perf["t_eval_ms"] / 1e3 <= out["decode_s"]


@needs_llama
def test_llama_cpp_reads_the_smollm2_tokenizer_as_transformers_does(smollm2_dir, tmp_path):
    """The exported vocabulary, merges and pre-tokenizer make llama.cpp split text exactly as
    the Hugging Face tokenizer does (a tiny model with SmolLM2's 49 152-token vocabulary)."""
    from transformers import AutoTokenizer

    from greenllm.runtimes.llamacpp import LlamaCppRuntime

    tok = AutoTokenizer.from_pretrained(str(smollm2_dir))
    model = tiny_causal_lm(4, vocab_size=len(tok), tie_word_embeddings=True).eval()
    rep = export_model(model, tok, "gguf", "q8_0", tmp_path / "vocab.gguf")
    rt = LlamaCppRuntime(rep.path, threads=1)
    try:
        for text in ["Hello world! 12345 tokens, naïve café — <|im_start|>user", "  two  spaces\n"]:
            llama = rt.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            assert llama == tok(text, add_special_tokens=False)["input_ids"], text
    finally:
        rt.close()


@pytest.mark.parametrize("group", [32, 64])
def test_symmetric_int4_becomes_q4_0_with_its_own_codes(tmp_path, group):
    """A symmetric 4-bit layer (GPTQ / RTN with sym, zero 8) in groups of 32 (or 64: two
    blocks with one scale) is written as Q4_0 without re-rounding: value = fp16(scale) *
    (code - 8); an asymmetric one is re-quantized, and the report says which."""
    from greenllm.steps.int4_linear import Int4Linear

    model, tok = tiny_llama(6), bpe_tokenizer()
    gen = torch.Generator().manual_seed(0)
    grids = {}
    for name in ("up_proj", "down_proj"):
        lin = getattr(model.model.layers[0].mlp, name)
        out_f, in_f = lin.weight.shape
        codes = torch.randint(0, 16, (out_f, in_f), generator=gen, dtype=torch.uint8)
        scales = torch.rand(out_f, in_f // group, generator=gen) * 0.02 + 1e-3
        zeros = (
            torch.full_like(scales, 8.0)
            if name == "up_proj"
            else torch.randint(0, 16, scales.shape, generator=gen).float()
        )
        setattr(
            model.model.layers[0].mlp,
            name,
            Int4Linear.from_quantized(codes, scales, zeros, group),
        )
        grids[name] = (codes.float(), scales, zeros)
    k = model.model.layers[0].self_attn.k_proj
    kc = torch.randint(0, 16, k.weight.shape, generator=gen, dtype=torch.uint8)
    ks = torch.rand(k.weight.shape[0], k.weight.shape[1] // group, generator=gen) * 0.02 + 1e-3
    model.model.layers[0].self_attn.k_proj = Int4Linear.from_quantized(
        kc, ks, torch.full_like(ks, 8.0), group
    )
    rep = export_model(model, tok, "gguf", "q4_0", tmp_path / "i4.gguf")
    assert any(
        "2 symmetric 4-bit matrices written as Q4_0 with their own codes" in n for n in rep.notes
    )
    assert any("1 4-bit matrices re-quantized" in n for n in rep.notes)
    codes, scales, _ = grids["up_proj"]
    cols = torch.arange(codes.shape[1]) // group
    want = (scales.half().float()[:, cols] * (codes - 8)).numpy()
    np.testing.assert_array_equal(_dequantized(rep.path, "blk.0.ffn_up.weight"), want)
    kw = (ks.half().float()[:, torch.arange(kc.shape[1]) // group] * (kc.float() - 8)).numpy()
    np.testing.assert_array_equal(
        _dequantized(rep.path, "blk.0.attn_k.weight"), permute_rows(kw, 2)
    )
