"""Perplexity: rolling windows, lm-eval's word/byte normalisation, WikiText handling."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from greenllm.config import parse_config, to_dict  # noqa: E402
from greenllm.errors import ConfigError, DataError  # noqa: E402
from greenllm.evals import evaluate  # noqa: E402
from greenllm.evals.perplexity import (  # noqa: E402
    PerplexityConfig,
    load_documents,
    perplexity_metrics,
    split_wikitext,
    wikitext_detokenizer,
)


def doc_loglik(model, tok, text):
    """Hand-computed: BOS (prefix) + tokens in one forward pass, every token predicted once."""
    ids = tok.encode(text)
    inp = torch.tensor([[tok.bos_token_id] + ids[:-1]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=inp).logits[0].double(), -1)
    return sum(float(logp[i, t]) for i, t in enumerate(ids)), len(ids)


def test_config_round_trips_and_validates():
    cfg = parse_config(
        PerplexityConfig, {"data": "a.txt", "max_length": 128, "stride": 64, "format": "wikitext"}
    )
    assert parse_config(PerplexityConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="stride"):
        parse_config(PerplexityConfig, {"max_length": 8, "stride": 9})
    with pytest.raises(ConfigError, match="did you mean 'wikitext'"):
        parse_config(PerplexityConfig, {"format": "wikitxt"})


def test_word_and_byte_definitions_hand_checked():
    # "héllo  wörld\nfoo" -> re.split(r"\s+") gives 3 words; UTF-8 bytes: 18 (é, ö are 2 bytes)
    text = "héllo  wörld\nfoo"
    docs, _ = load_documents([text])
    m = perplexity_metrics(-10.0, 5, 3, len(text.encode()))
    assert len(text.encode()) == 18
    assert m["perplexity"] == pytest.approx(math.exp(10 / 5))
    assert m["word_perplexity"] == pytest.approx(math.exp(10 / 3))
    assert m["byte_perplexity"] == pytest.approx(math.exp(10 / 18))
    assert m["bits_per_byte"] == pytest.approx(10 / 18 / math.log(2))
    assert docs[0].original == text


def test_perplexity_equals_hand_computed_single_window(tiny):
    model, tok = tiny
    texts = ["The quick brown fox jumps over the lazy dog.", "Second doc, short."]
    from greenllm.evals.perplexity import run

    res = run(model, tok, PerplexityConfig(max_length=256), data=texts)
    ll, n = zip(*(doc_loglik(model, tok, t) for t in texts))
    assert res.metrics["loglikelihood"] == pytest.approx(sum(ll), abs=1e-3)
    assert res.metrics["perplexity"] == pytest.approx(math.exp(-sum(ll) / sum(n)), rel=1e-5)
    words = sum(len(t.split()) for t in texts)
    assert res.metrics["word_perplexity"] == pytest.approx(math.exp(-sum(ll) / words), rel=1e-5)
    assert res.n == 2 and res.settings["windows"] == 2


def test_windows_and_stride_change_context_not_the_token_count(tiny):
    model, tok = tiny
    from greenllm.evals.perplexity import run

    text = "abcdefghij" * 6
    a = run(model, tok, PerplexityConfig(max_length=16), data=[text])
    b = run(model, tok, PerplexityConfig(max_length=16, stride=4), data=[text])
    c = run(model, tok, PerplexityConfig(max_length=16, batch_size=1), data=[text])
    assert a.metrics["tokens"] == b.metrics["tokens"] == 60
    assert a.settings["windows"] == 4 and b.settings["windows"] > a.settings["windows"]
    assert a.metrics["loglikelihood"] == pytest.approx(c.metrics["loglikelihood"], abs=1e-3)
    assert a.metrics["loglikelihood"] != pytest.approx(b.metrics["loglikelihood"], abs=1e-3)


def test_wikitext_split_and_detokenize(tmp_path):
    raw = (
        " = Alpha = \r\n Alpha is 1 @,@ 000 km @-@ long . \r\n = = History = = \r\n"
        " It began ( in 1900 ) . \r\n = Beta = \r\n Beta 's text . \r\n"
    )
    p = tmp_path / "wiki.test.raw"
    p.write_bytes(raw.encode())
    docs, info = load_documents(str(p))
    assert info["format"] == "wikitext" and len(docs) == 2
    assert docs[0].original.startswith(" = Alpha = \n") and "= = History" in docs[0].original
    assert "1,000 km-long." in docs[0].scored and "(in 1900)" in docs[0].scored
    assert docs[1].scored.strip() == "= Beta =\nBeta's text."
    assert split_wikitext(" = A = \n x \n") == [" = A = \n x \n"]
    ref = pytest.importorskip("lm_eval.tasks.wikitext.preprocess_wikitext")
    for d in docs:
        assert wikitext_detokenizer(d.original) == ref.wikitext_detokenizer({"page": d.original})


def test_datasets_input_and_bad_inputs(tiny, tmp_path):
    datasets = pytest.importorskip("datasets")
    model, tok = tiny
    from greenllm.evals.perplexity import run

    ds = datasets.Dataset.from_dict({"text": ["hello there", "", "general kenobi"]})
    res = run(model, tok, PerplexityConfig(max_length=64), data=ds)
    assert res.n == 2
    with pytest.raises(DataError, match="no column 'page'"):
        run(model, tok, PerplexityConfig(text_field="page"), data=ds)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(DataError, match="holds no text"):
        evaluate(model, tok, "perplexity", data=str(empty))


def test_builtin_wiki_sample_loads(tiny):
    docs, info = load_documents("builtin:wiki-sample")
    assert len(docs) == 1 and len(docs[0].original.split()) > 1500
    assert info["data_sha256"] and info["format"] == "text"


def test_result_round_trips_through_json(tiny):
    import json

    from greenllm.results import EvalResult

    model, tok = tiny
    r = evaluate(model, tok, "perplexity", data="builtin:wiki-sample", max_length=128, limit=1)
    assert EvalResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert EvalResult.from_json(json.loads(json.dumps(r.to_json()))) == r
    assert r.settings["window_tokens"] == 128 and r.settings["windows"] > 10


def test_token_perplexity_by_hand(tiny):
    """Non-overlapping windows, tokens 2..k of each window predicted, short tail dropped."""
    import math

    import torch

    from greenllm.errors import DataError
    from greenllm.evals.perplexity import token_perplexity

    model, tok = tiny
    ids = torch.tensor(tok("windows of a fixed token slice, scored by hand").input_ids)
    nll, count = 0.0, 0
    with torch.no_grad():
        for lo, hi in ((0, 8), (8, 16), (16, 24)):  # window 8, at most 3 windows
            logp = torch.log_softmax(model(ids[None, lo:hi]).logits[0].float(), -1)
            for p in range(hi - lo - 1):
                nll -= logp[p, ids[lo + p + 1]].item()
                count += 1
    assert token_perplexity(model, ids, 8, windows=3) == pytest.approx(
        math.exp(nll / count), rel=1e-5
    )
    assert token_perplexity(model, ids[None, :24], 8) == pytest.approx(
        math.exp(nll / count), rel=1e-5
    )
    with pytest.raises(DataError):
        token_perplexity(model, ids[:1], 8)


# lm-eval's ``wikitext`` task reads EleutherAI/wikitext_document_level, whose builder splits
# wiki.{split}.raw into pages: every line kept (blank ones too), a new page at each line that,
# with "= =" / "= = =" closed up and stripped, starts with "= " and ends with " ="; pages joined
# by "\n"; a whitespace-only part before the first heading dropped. The pages below are what it
# yields for this text, worked out by hand from that rule.
WIKI_LF = (
    " \n = Alpha = \n \n Alpha is 1 @,@ 000 km @-@ long . \n \n = = History = = \n \n"
    " It began ( in 1900 ) . \n \n = = = Early years = = = \n x = y \n \n"
    " = Beta = \n \n Beta 's text . \n \n"
)
WIKI_LF_PAGES = [
    (
        " = Alpha = \n \n Alpha is 1 @,@ 000 km @-@ long . \n \n = = History = = \n \n"
        " It began ( in 1900 ) . \n \n = = = Early years = = = \n x = y \n "
    ),
    " = Beta = \n \n Beta 's text . \n \n",
]


def test_wikitext_split_keeps_blank_lines_like_lm_evals_documents(tmp_path):
    assert split_wikitext(WIKI_LF) == WIKI_LF_PAGES
    assert "\n".join(WIKI_LF_PAGES) == WIKI_LF[len(" \n") :]  # nothing else is lost
    p = tmp_path / "wiki.test.raw"
    p.write_text(WIKI_LF, encoding="utf-8")
    docs, info = load_documents(str(p))
    assert info["format"] == "wikitext"
    assert [d.original for d in docs] == WIKI_LF_PAGES
    # CRLF line ends read as LF, as Python's text mode does when the data set is built
    p.write_bytes(WIKI_LF.replace("\n", "\r\n").encode())
    assert [d.original for d in load_documents(str(p))[0]] == WIKI_LF_PAGES
    ref = pytest.importorskip("lm_eval.tasks.wikitext.preprocess_wikitext")
    import re

    for d in docs:  # scored text and word/byte counts as lm-eval computes them on the page
        assert d.scored == ref.wikitext_detokenizer({"page": d.original})
        words, nbytes = len(re.split(r"\s+", d.original)), len(d.original.encode("utf-8"))
        got = ref.process_results({"page": d.original}, [-1.0])
        assert got["word_perplexity"][1] == words and got["byte_perplexity"][1] == nbytes


def test_wikitext_split_on_the_real_test_set(shared_data):
    """The shipped wiki.test.raw is CRLF with its blank lines removed; rebuilding the original
    LF layout from test.txt's blank-line positions gives lm-eval's 62 test documents, and the
    shipped file gives the same 62 documents less their blank lines."""
    from greenllm.evals.perplexity import is_wikitext_title

    d = shared_data / "wikitext"
    if not (d / "wiki.test.raw").is_file() or not (d / "test.txt").is_file():
        pytest.skip("no shared wikitext test files")
    tokens = (d / "test.txt").read_text(encoding="utf-8").split("\n")
    raw = iter(ln for ln in (d / "wiki.test.raw").read_bytes().decode("utf-8").split("\r\n") if ln)
    original = "\n".join(ln if not ln.strip() else next(raw) for ln in tokens)
    assert next(raw, None) is None
    docs = split_wikitext(original)
    assert len(docs) == 62
    assert all(is_wikitext_title(doc.split("\n")[0]) for doc in docs)
    assert "\n".join(docs) == original[len(" \n") :]
    assert docs[0].startswith(" = Robert Boulter = \n \n Robert Boulter is an English film")
    shipped = split_wikitext((d / "wiki.test.raw").read_text(encoding="utf-8"))
    assert len(shipped) == 62
    for a, b in zip(docs, shipped):
        assert [ln for ln in a.split("\n") if ln.strip()] == [
            ln for ln in b.split("\n") if ln.strip()
        ]
