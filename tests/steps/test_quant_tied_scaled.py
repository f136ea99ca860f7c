"""int8_weight with a tied head on models whose input embedding scales its rows (Gemma 2 and 3
multiply by sqrt(hidden_size)): the int8 embedding that replaces the tied table keeps the
scale, so logits stay as close to fp32 as on a Llama-style model (issue 11)."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from greenllm.errors import UnsupportedError
from greenllm.steps import compress
from greenllm.steps.quant_native import Int8Embedding
from greenllm.testing import tiny_causal_lm

HEAD = "quantize:method=int8_weight,ignore=[]"


def _tiny_gemma(kind: str, seed: int = 0):
    import transformers

    cfg_cls, model_cls = {
        "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
        "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
    }[kind]
    cfg = getattr(transformers, cfg_cls)(
        vocab_size=259,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=258,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = getattr(transformers, model_cls)(cfg)
    return model.eval()


def _max_logit_error(model, spec, ids):
    with torch.no_grad():
        ref = model(ids).logits
    q, (res,) = compress(copy.deepcopy(model), [spec])
    with torch.no_grad():
        out = q(ids).logits
    return (out - ref).abs().max().item(), ref.abs().max().item(), q, res


@pytest.mark.parametrize("kind", ["gemma2", "gemma3"])
def test_int8_tied_head_keeps_the_gemma_embedding_scale(kind):
    model = _tiny_gemma(kind)
    emb = model.get_input_embeddings()
    assert model.lm_head.weight is emb.weight and emb.embed_scale.item() == pytest.approx(8.0)
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        emb_ref = emb(ids)
    err, scale, q, res = _max_logit_error(model, HEAD, ids)
    new_emb = q.get_input_embeddings()
    assert isinstance(new_emb, Int8Embedding) and res.stats["tied_embedding"] == "lm_head"
    assert res.stats["embedding_scale"] == pytest.approx(8.0)
    # the embedding output itself: int8 rounding of the scaled rows (was 1/8 of them)
    with torch.no_grad():
        rel = ((new_emb(ids) - emb_ref).abs().max() / emb_ref.abs().max()).item()
    assert rel < 0.01
    # logits: within 5% of their range (a tiny Llama gets ~0.6%, Gemma ~2.5%; before the fix
    # the error was ~37%), and no worse than quantizing the same model without its head
    assert err < 0.05 * scale
    err_body, *_ = _max_logit_error(model, "quantize:method=int8_weight", ids)
    assert err < 2 * err_body + 1e-3
    llama = tiny_causal_lm(0, tie_word_embeddings=True)
    err_llama, scale_llama, *_ = _max_logit_error(llama, HEAD, ids)
    assert err / scale < 10 * (err_llama / scale_llama)


def test_a_gemma_model_with_an_int8_tied_head_saves_and_reloads(tmp_path):
    from greenllm.models import load_model, save
    from greenllm.testing import tiny_tokenizer

    model = _tiny_gemma("gemma2", seed=2)
    ids = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(3))
    q, _ = compress(model, [HEAD])
    with torch.no_grad():
        out = q(ids).logits
    save(q, tmp_path / "q", tiny_tokenizer())
    r, _ = load_model(str(tmp_path / "q"))
    emb = r.get_input_embeddings()
    assert isinstance(emb, Int8Embedding) and emb.embed_scale == pytest.approx(8.0)
    with torch.no_grad():
        assert torch.allclose(r(ids).logits, out, atol=1e-6)


class _ShiftedEmbedding(torch.nn.Embedding):
    """An embedding that does more than scale its rows: an int8 table cannot stand in."""

    def forward(self, ids):
        return super().forward(ids) + 1.0


def test_a_tied_embedding_that_is_not_a_row_scale_is_refused_and_the_model_left_alone():
    model = tiny_causal_lm(0, tie_word_embeddings=True)
    old = model.get_input_embeddings()
    emb = _ShiftedEmbedding(old.num_embeddings, old.embedding_dim)
    emb.weight = old.weight
    model.set_input_embeddings(emb)
    assert model.lm_head.weight is emb.weight
    with pytest.raises(UnsupportedError, match=r"_ShiftedEmbedding.*ignore=\['lm_head'\]"):
        compress(model, [HEAD])
    assert model.get_input_embeddings() is emb and type(model.lm_head) is torch.nn.Linear
