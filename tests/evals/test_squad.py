"""SQuAD: the official v1.1 normalisation, EM/F1 (max over gold answers), file checks."""

from __future__ import annotations

import json

import pytest

from greenllm.config import parse_config, to_dict
from greenllm.errors import DataError
from greenllm.evals.squad import (
    SquadConfig,
    best_over,
    exact_match,
    f1_score,
    load_squad,
    normalize_answer,
)


@pytest.mark.parametrize(
    "raw,norm",
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  an   apple, a pear ", "apple pear"),
        ("Theatre", "theatre"),  # 'the' only as a whole word
        ("U.S.A.", "usa"),
        ("a-b c", "ab c"),
        ("", ""),
    ],
)
def test_official_normalisation(raw, norm):
    assert normalize_answer(raw) == norm


def test_em_f1_rules():
    assert exact_match("the Denver Broncos", "Denver Broncos.") == 1.0
    assert f1_score("Denver Broncos won", "the Denver Broncos") == pytest.approx(
        2 * (2 / 3) * 1 / (2 / 3 + 1)
    )
    assert f1_score("nothing here", "Denver") == 0.0
    assert f1_score("a", "the") == 0.0  # both normalise to empty: no common tokens
    golds = ("in 1874", "1874")
    assert best_over(exact_match, "1874", golds) == 1.0
    assert best_over(f1_score, "year 1874", golds) == pytest.approx(2 / 3)


def test_config_round_trips():
    cfg = parse_config(SquadConfig, {"data": "x.json", "limit": 3, "max_new_tokens": 16})
    assert parse_config(SquadConfig, to_dict(cfg)) == cfg


def test_load_builtin_and_errors(tmp_path):
    from greenllm.evals.base import resolve_data

    items = load_squad(resolve_data("builtin:squad-sample"))
    assert len(items) >= 15 and all(q.answers for q in items)
    for q in items:  # every gold answer is a span of its passage
        assert all(a in q.context for a in q.answers)
    bad = tmp_path / "s.json"
    bad.write_text('{"data": [}')
    with pytest.raises(DataError, match=r"s.json:1: malformed JSON"):
        load_squad(bad)
    bad.write_text(
        json.dumps(
            {
                "data": [
                    {
                        "paragraphs": [
                            {"context": "c", "qas": [{"id": "1", "question": "q?", "answers": []}]}
                        ]
                    }
                ]
            }
        )
    )
    with pytest.raises(DataError, match=r"paragraphs\[0\].qas\[0\]: no gold answers"):
        load_squad(bad)


def test_run_on_tiny_model_records_predictions(tiny):
    pytest.importorskip("torch")
    from greenllm.evals import evaluate

    model, tok = tiny
    res = evaluate(model, tok, "squad", limit=3, max_new_tokens=4, batch_size=2)
    assert res.n == 3 and 0.0 <= res.metrics["f1"] <= 1.0 and 0.0 <= res.metrics["em"] <= 1.0
    assert len(res.settings["examples"]) == 3 and res.settings["decoding"] == "greedy"
