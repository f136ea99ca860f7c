"""Packed multiple-choice scoring on models with sliding-window attention (Mistral, Gemma-3,
Phi-3): a request longer than the window scores as it does alone (issue 11)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from greenllm.evals.loglik import Request, score, score_naive, sliding_window

WINDOW = 8


def _tiny(kind: str, window: int | None = WINDOW, seed: int = 0):
    import transformers

    common = {
        "vocab_size": 259,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "sliding_window": window,
        "bos_token_id": 256,
        "eos_token_id": 257,
        "pad_token_id": 258,
    }
    if kind == "mistral":
        cfg = transformers.MistralConfig(**common)
        cls = transformers.MistralForCausalLM
    else:  # one sliding and one full-attention layer, as Gemma-3 mixes them
        cfg = transformers.Gemma3TextConfig(
            **common, head_dim=16, layer_types=["sliding_attention", "full_attention"]
        )
        cls = transformers.Gemma3ForCausalLM
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = cls(cfg)
    return model.eval()


def _requests(header: int = 0):
    """Items of several choices sharing a context; contexts and answers both longer than the
    window, so packed rows are far longer than it; plus a short item within the window. With
    ``header``, every item's context starts with the same ``header`` tokens (as MMLU's k-shot
    examples), which the scorer runs once and shares through the KV cache."""
    g = torch.Generator().manual_seed(5)
    rnd = lambda n: tuple(torch.randint(0, 256, (n,), generator=g).tolist())
    head = rnd(header)
    reqs = []
    for item, (n_ctx, n_conts) in enumerate([(14, (6, 11, 3, 9)), (5, (12, 2)), (20, (4, 5))]):
        ctx = head + rnd(n_ctx)
        reqs += [Request(item, ctx, rnd(n)) for n in n_conts]
    short = rnd(3)
    reqs += [Request(3, short, rnd(2)), Request(3, short, rnd(1))]
    return reqs


@pytest.mark.parametrize("kind", ["mistral", "gemma3"])
@pytest.mark.parametrize("batch_size,header", [(1, 0), (4, 0), (4, 12)])
def test_packed_scores_equal_unpacked_past_the_sliding_window(
    kind, batch_size, header, monkeypatch
):
    from greenllm.evals import loglik

    shared = []
    run_after_prefix = loglik._run_after_prefix
    monkeypatch.setattr(
        loglik, "_run_after_prefix", lambda *a: shared.append(a[3]) or run_after_prefix(*a)
    )
    model = _tiny(kind)
    assert sliding_window(model) == WINDOW
    reqs = _requests(header)
    naive = score_naive(model, reqs)
    got = score(model, reqs, batch_size=batch_size)
    for (a, ga), (b, gb) in zip(naive, got):
        assert b == pytest.approx(a, abs=1e-4) and ga == gb
    # with a common header the rows longer than the window share it through the cache
    assert bool(shared) == bool(header) and all(n >= header for n in shared)


def test_models_without_a_sliding_window_report_none(tiny):
    model, _ = tiny
    assert sliding_window(model) is None
    assert sliding_window(_tiny("mistral", window=None)) is None
    import transformers

    qwen = transformers.Qwen2Config(sliding_window=16, use_sliding_window=False)
    assert sliding_window(type("M", (), {"config": qwen})()) is None
