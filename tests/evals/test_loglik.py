"""Log-likelihood machinery: lm-eval tokenisation, hand-computed scores, shared prefix, batching."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from greenllm.errors import DataError  # noqa: E402
from greenllm.evals.loglik import (  # noqa: E402
    Encoder,
    Request,
    build_requests,
    resolve_max_length,
    rolling_windows,
    score,
    score_naive,
)

PAIRS = [
    (0, "The cat sat on", " the mat"),
    (0, "The cat sat on", " a hat and more"),
    (0, "The cat sat on", " x"),
    (1, "Hello ", " world"),
    (1, "Hello", "  there"),
    (2, "Winners take Alice", ". ok"),
    (2, "Winners take Bob", ". ok"),
    (3, "", " lone"),
    (4, "Q: 2+2?\nA:", " 4"),
    (5, "Zebra", " crossing"),
    (5, "Apple", " crossing"),
]


def hand_loglik(model, ctx_ids, cont_ids):
    """Plain full forward pass over ctx+cont; sum of log p(cont token | prefix)."""
    ids = torch.tensor([list(ctx_ids) + list(cont_ids)])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    n = len(ctx_ids)
    return sum(float(logp[n - 1 + j, t]) for j, t in enumerate(cont_ids))


def test_encode_pair_moves_trailing_space_and_splits_whole_encoding(tiny):
    _, tok = tiny
    enc = Encoder(tok)
    ctx, cont = enc.encode_pair("Hello ", "world")
    assert ctx == tok.encode("Hello") and cont == tok.encode("Hello world")[len(ctx) :]
    assert tok.decode(cont) == " world"
    ctx2, cont2 = enc.encode_pair("Hello", " world")
    assert (ctx2, cont2) == (ctx, cont)


def test_empty_context_uses_prefix_token(tiny):
    _, tok = tiny
    enc = Encoder(tok)
    ctx, cont = enc.encode_pair("", " lone")
    assert ctx == [tok.bos_token_id] and cont == tok.encode(" lone", add_special_tokens=False)
    # a continuation that already starts with BOS keeps it as the context
    ctx, cont = enc.encode_pair("", "<s>abc")
    assert ctx == [tok.bos_token_id] and tok.decode(cont) == "abc"


def test_encoder_matches_lm_eval_hflm(tiny):
    hf = pytest.importorskip("lm_eval.models.huggingface")
    model, tok = tiny
    lm = hf.HFLM(pretrained=model, tokenizer=tok, batch_size=1)
    enc = Encoder(tok)
    for ctx, cont in [("Hello  ", "world"), ("A b\n", " c d"), ("x", "y z "), ("", "q")]:
        if ctx:
            assert tuple(map(list, lm._encode_pair(ctx, cont))) == enc.encode_pair(ctx, cont)
    assert resolve_max_length(model, tok) == lm.max_length


def test_scores_equal_hand_computed_loglik(tiny):
    model, tok = tiny
    reqs = build_requests(Encoder(tok), PAIRS)
    got = score(model, reqs, batch_size=3)
    for r, (ll, _) in zip(reqs, got):
        assert ll == pytest.approx(hand_loglik(model, r.context, r.continuation), abs=1e-4)


def test_shared_prefix_equals_naive_and_batch_size_never_changes_a_score(tiny):
    model, tok = tiny
    reqs = build_requests(Encoder(tok), PAIRS)
    naive = score_naive(model, reqs)
    for bs in (1, 2, 5, 64):
        got = score(model, reqs, batch_size=bs)
        for (a, ga), (b, gb) in zip(naive, got):
            assert a == pytest.approx(b, abs=1e-4)
            assert ga == gb


HEADER = "The following are multiple choice questions about things.\n\n"
MC = [
    (i, HEADER + q + "\nAnswer:", " " + a)
    for i, q in enumerate(
        ["Why?", "What is the capital of the place where we live now?", "2+2=?", "Name a colour."]
    )
    for a in "ABCD"
]


def _scored_like_naive(model, reqs, batch_size):
    """Score ``reqs``; assert every score equals the naive one; return the (rows, length) of
    every forward pass the scorer made (a pre-hook on the tiny model's base)."""
    seen: list[tuple[int, int]] = []
    base = getattr(model, model.base_model_prefix)
    handle = base.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        got = score(model, reqs, batch_size=batch_size)
    finally:
        handle.remove()
    for (a, ga), (b, gb) in zip(score_naive(model, reqs), got):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb
    return seen


def test_one_token_answers_with_padding_equal_naive(tiny):
    """MMLU-shaped items (one shared position scores four one-token answers) in one padded,
    mask-free batch, and again with the shared header run once for the whole batch."""
    model, tok = tiny
    reqs = build_requests(Encoder(tok), MC)
    naive = score_naive(model, reqs)
    for bs in (1, 3, 4):
        for (a, ga), (b, gb) in zip(naive, score(model, reqs, batch_size=bs)):
            assert a == pytest.approx(b, abs=1e-4) and ga == gb


def test_header_shared_by_all_items_runs_once_across_batches(tiny):
    model, tok = tiny
    enc = Encoder(tok)
    reqs = build_requests(
        enc, MC + [(9, HEADER + "Pick one", " yes"), (9, HEADER + "Pick one", " no, never")]
    )
    header = len(enc.encode(HEADER.rstrip()))
    seen = _scored_like_naive(model, reqs, batch_size=2)
    # 5 items in 3 batches: the header (>= 8 tokens) is computed once, then only the rest
    assert len(seen) == 4 and seen[0][0] == 1 and seen[0][1] >= header - 1 >= 8, seen


def test_a_cache_that_cannot_be_shared_falls_back_to_plain_batches(tiny, monkeypatch):
    from transformers import DynamicCache

    def refuse(self, repeats):
        raise NotImplementedError("this cache cannot be repeated")

    monkeypatch.setattr(DynamicCache, "batch_repeat_interleave", refuse)
    model, tok = tiny
    seen = _scored_like_naive(model, build_requests(Encoder(tok), MC), batch_size=2)
    # batch 1 tries its header (one 1-row pass), then every batch runs whole, and no later
    # batch tries again
    assert [rows for rows, _ in seen] == [1, 2, 2], seen


def test_items_sharing_long_k_shot_prefixes_are_batched_together(tiny):
    """Two 'subjects' with their own long example prefix, interleaved and of mixed lengths:
    each subject's prefix runs once, and every score still equals the naive one."""
    model, tok = tiny
    enc = Encoder(tok)
    shots = {
        s: f"Examples about {s}: " + " ".join(f"q{i} {s} a{i}." for i in range(12)) + "\n"
        for s in ("ducks", "boats")
    }
    pairs = [
        (i, shots[s] + "Q" + "?" * (i + 1) + "\nAnswer:", " " + a)
        for i, s in enumerate(["ducks", "boats"] * 3)
        for a in "AB"
    ]
    seen = _scored_like_naive(model, build_requests(enc, pairs), batch_size=3)
    prefix_runs = [n for rows, n in seen if rows == 1]
    assert len(seen) == 4 and len(prefix_runs) == 2 and min(prefix_runs) >= 64, seen


def test_log_probs_are_accurate_and_greedy_takes_the_first_of_tied_maxima():
    from greenllm.evals.loglik import _positions_ll

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 49152, generator=g) * 8
    logits[5, 7] = logits[5, 9] = logits[5].max() + 1  # an exact tie: argmax is index 7
    wanted = [(r, (r * 131) % 49152) for r in range(300)] + [(5, 7), (5, 9), (0, 3)]
    ll, hit = _positions_ll(None, logits, wanted)
    ref = torch.log_softmax(logits.double(), -1)
    exact = torch.tensor([float(ref[r, t]) for r, t in wanted], dtype=torch.float64)
    assert ((ll.double() - exact).abs() <= 2e-7 * exact.abs() + 1e-6).all()  # ~1 float32 ulp
    assert hit[-3] and not hit[-2]
    assert hit.tolist() == [bool(logits[r].argmax() == t) for r, t in wanted]


def test_is_greedy_is_true_for_the_argmax_continuation(tiny):
    model, tok = tiny
    ids = tok.encode("abc")
    with torch.no_grad():
        nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    ((ll, greedy),) = score(model, [Request(0, tuple(ids), (nxt,))])
    assert greedy
    other = (nxt + 1) % 256
    ((_, greedy2),) = score(model, [Request(0, tuple(ids), (other,))])
    assert not greedy2


def test_left_truncation_like_lm_eval(tiny):
    model, tok = tiny
    req = Request(0, tuple(range(40, 60)), (70, 71, 72))
    ((ll, _),) = score(model, [req], max_length=8)
    full = list(req.context + req.continuation)[-9:]
    assert ll == pytest.approx(hand_loglik(model, full[:-3], full[-3:]), abs=1e-4)
    with pytest.raises(DataError, match="longer than the model"):
        score(model, [Request(0, (1,), tuple(range(10)))], max_length=8)


def test_empty_continuation_is_a_data_error(tiny):
    _, tok = tiny
    with pytest.raises(DataError, match="no tokens"):
        build_requests(Encoder(tok), [(0, "abc", "")])


@pytest.mark.parametrize(
    "n,max_len,ctx_len", [(1, 4, 1), (10, 4, 1), (10, 4, 2), (9, 4, 4), (17, 5, 3), (4, 4, 1)]
)
def test_rolling_windows_match_lm_eval(n, max_len, ctx_len):
    utils = pytest.importorskip("lm_eval.utils")
    toks = list(range(100, 100 + n))
    ref = [
        utils.make_disjoint_window(w)
        for w in utils.get_rolling_token_windows(
            toks, prefix_token=7, max_seq_len=max_len, context_len=ctx_len
        )
    ]
    ours = rolling_windows(toks, 7, max_len, ctx_len)
    assert ours == [(list(a), list(b)) for a, b in ref]
    assert [t for _, b in ours for t in b] == toks  # every token predicted exactly once
