"""Multiple-choice adapters and scoring rules on the tiny model, with hand-computed scores."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from greenllm.config import parse_config, to_dict  # noqa: E402
from greenllm.errors import ConfigError, DataError, UnknownNameError  # noqa: E402
from greenllm.evals import evaluate  # noqa: E402
from greenllm.evals.base import mean_stderr, parse_eval  # noqa: E402
from greenllm.evals.choice import ChoiceConfig, choice_metrics  # noqa: E402
from greenllm.evals.loglik import Encoder  # noqa: E402
from greenllm.evals.tasks import (  # noqa: E402
    ChoiceDoc,
    hellaswag_preprocess,
    load_arc,
    load_hellaswag,
    load_mmlu,
    load_winogrande,
)


def hand_ll(model, tok, ctx, cont):
    c, k = Encoder(tok).encode_pair(ctx, cont)
    ids = torch.tensor([c + k])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    return sum(float(logp[len(c) - 1 + j, t]) for j, t in enumerate(k))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_config_round_trips():
    cfg = parse_config(
        ChoiceConfig,
        {
            "task": "mmlu",
            "data": "x",
            "shots": 5,
            "limit": 3,
            "subjects": ["anatomy"],
            "add_bos_token": True,
        },
    )
    assert parse_config(ChoiceConfig, to_dict(cfg)) == cfg


def test_shots_only_for_mmlu_and_unknown_key_did_you_mean():
    with pytest.raises(ConfigError, match="shots"):
        parse_eval("hellaswag", {"data": "x", "shots": 2})
    with pytest.raises(ConfigError, match="did you mean 'limit'"):
        parse_eval("choice", {"limt": 3})


def test_unknown_task_did_you_mean():
    with pytest.raises(UnknownNameError, match="did you mean 'hellaswag'"):
        parse_eval("hellaswg", {})


def test_generic_jsonl_scores_and_metrics_by_hand(tiny, tmp_path):
    model, tok = tiny
    rows = [
        {"context": "The sky is", "choices": ["blue", "a very long green answer"], "label": 0},
        {"context": "One, two,", "choices": ["three", "x"], "label": 1},
        {"context": "Cats say", "choices": ["meow", "woof", "moo"], "label": 2},
    ]
    path = write_jsonl(tmp_path / "g.jsonl", rows)
    res = evaluate(model, tok, "choice", data=str(path), batch_size=2)
    acc, accn = [], []
    for r in rows:
        lls = [hand_ll(model, tok, r["context"], " " + c) for c in r["choices"]]
        pred = max(range(len(lls)), key=lambda i: lls[i])
        norm = [ll / len(c) for ll, c in zip(lls, r["choices"])]
        pred_n = max(range(len(norm)), key=lambda i: norm[i])
        acc.append(float(pred == r["label"]))
        accn.append(float(pred_n == r["label"]))
    assert res.n == 3 and res.task == "choice"
    assert res.metrics["acc"] == pytest.approx(sum(acc) / 3)
    assert res.metrics["acc_norm"] == pytest.approx(sum(accn) / 3)
    assert res.settings["data_sha256"] and res.settings["batch_size"] == 2
    assert res.settings["bos_in_encoding"] is False and "tokenizer" in res.settings


def test_acc_norm_and_stderr_rule():
    docs = [
        ChoiceDoc(("c",) * 2, (" aa", " b"), 0, ("aa", "b")),
        ChoiceDoc(("c",) * 2, (" aa", " b"), 1, ("aa", "b")),
    ]
    # doc0: lls -3 (len 2 -> -1.5) vs -2 (len 1 -> -2): acc picks 1, acc_norm picks 0
    scores = [[(-3.0, False), (-2.0, False)], [(-3.0, False), (-2.0, False)]]
    m = choice_metrics(docs, scores)
    assert m["acc"] == 0.5 and m["acc_norm"] == 0.5
    assert m["acc_stderr"] == pytest.approx(math.sqrt(0.5) / math.sqrt(2))
    assert mean_stderr([1.0]) is None


def test_hellaswag_jsonl_uses_lm_eval_preprocess(tmp_path):
    row = {
        "ind": 1,
        "activity_label": "Baking",
        "ctx_a": "A man [title] mixes flour.",
        "ctx_b": "then HE",
        "endings": ["kneads  it.", "[step] sings.", "a", "b"],
        "label": "1",
    }
    docs = list(load_hellaswag(write_jsonl(tmp_path / "h.jsonl", [row])))
    d = docs[0]
    assert d.contexts[0] == "Baking: A man. mixes flour. Then he"
    # lm-eval removes the tag but keeps the space after it
    assert d.continuations[:2] == (" kneads it.", "  sings.")
    assert d.label == 1 and d.norm_texts[1] == " sings."
    ref = pytest.importorskip("lm_eval.tasks.hellaswag.utils")
    for text in [
        row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize(),
        *row["endings"],
        " x [header] y [title] z  w ",
    ]:
        assert hellaswag_preprocess(text) == ref.preprocess(text)
    assert hellaswag_preprocess(" x [header] y ") == "x y"


def test_hellaswag_derived_text_format(tmp_path):
    p = tmp_path / "hs.txt"
    p.write_text("Cooking: he stirs. the pot\n2\nboils.\nsings.\nflies.\nruns.\n")
    (d,) = load_hellaswag(p)
    assert d.contexts[0] == "Cooking: he stirs. the pot" and d.label == 2
    assert d.continuations == (" boils.", " sings.", " flies.", " runs.")
    p.write_text("a\n1\nb\n")
    with pytest.raises(DataError, match="6 lines per item"):
        list(load_hellaswag(p))


def _mmlu_tree(tmp_path):
    for split in ("dev", "test"):
        (tmp_path / split).mkdir()
    (tmp_path / "dev" / "high_school_math_dev.csv").write_text(
        '"What is 1+1? ",1,2,3,4,B\nWhat is 2+2?,4,5,6,7,A\n'
    )
    (tmp_path / "test" / "high_school_math_test.csv").write_text(
        'Which is not a number?,1,None,3,"4, 5",B\n'
    )
    return tmp_path


def test_mmlu_keeps_none_and_builds_lm_eval_prompt(tmp_path):
    root = _mmlu_tree(tmp_path)
    (d,) = load_mmlu(root)
    head = "The following are multiple choice questions (with answers) about high school math.\n\n"
    assert d.contexts[0] == head + ("Which is not a number?\nA. 1\nB. None\nC. 3\nD. 4, 5\nAnswer:")
    assert d.continuations == (" A", " B", " C", " D") and d.label == 1
    (d2,) = load_mmlu(root, shots=2)
    assert d2.contexts[0] == (
        head + "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
        "What is 2+2?\nA. 4\nB. 5\nC. 6\nD. 7\nAnswer: A\n\n"
        "Which is not a number?\nA. 1\nB. None\nC. 3\nD. 4, 5\nAnswer:"
    )
    with pytest.raises(DataError, match="fewer than shots=3"):
        list(load_mmlu(root, shots=3))


def test_mmlu_bad_answer_names_file_and_line(tmp_path):
    root = _mmlu_tree(tmp_path)
    (root / "test" / "high_school_math_test.csv").write_text("q,1,2,3,4,A\nq,1,2,3,4,E\n")
    with pytest.raises(DataError, match=r"high_school_math_test.csv:2: answer 'E' is out of range"):
        list(load_mmlu(root))


def test_winogrande_partial_scoring(tiny, tmp_path):
    model, tok = tiny
    path = write_jsonl(
        tmp_path / "dev.jsonl",
        [
            {
                "qID": "a",
                "sentence": "Ann gave Bea a gift because _ was kind.",
                "option1": "Ann",
                "option2": "Bea",
                "answer": "",
            }
        ],
    )
    (tmp_path / "dev-labels.lst").write_text("1\n")
    (d,) = load_winogrande(path)
    assert d.contexts == ("Ann gave Bea a gift because Ann", "Ann gave Bea a gift because Bea")
    assert d.continuations == (" was kind.", " was kind.") and d.label == 0
    res = evaluate(model, tok, "winogrande", data=str(path))
    lls = [hand_ll(model, tok, c, " was kind.") for c in d.contexts]
    assert res.metrics["acc"] == (1.0 if lls[0] >= lls[1] else 0.0)
    assert res.task == "winogrande"


def test_arc_both_layouts(tmp_path):
    official = {
        "id": "x",
        "question": {
            "stem": "Which is hot?",
            "choices": [{"text": "ice", "label": "A"}, {"text": "fire", "label": "B"}],
        },
        "answerKey": "B",
    }
    flat = {
        "id": "y",
        "question": "Which is cold?",
        "choices": {"text": ["ice", "fire"], "label": ["1", "2"]},
        "answerKey": "1",
    }
    a, b = load_arc(write_jsonl(tmp_path / "arc.jsonl", [official, flat]))
    assert a.contexts[0] == "Question: Which is hot?\nAnswer:" and a.label == 1
    assert b.continuations == (" ice", " fire") and b.label == 0


def test_bad_inputs(tiny, tmp_path):
    model, tok = tiny
    p = tmp_path / "bad.jsonl"
    p.write_text('{"context": "a", "choices": ["b", "c"], "label": 0}\n{"context": oops}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        evaluate(model, tok, "choice", data=str(p))
    p.write_text('{"context": "a", "choices": ["b", "c"], "label": 2}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: label 2 is out of range for 2 choices"):
        evaluate(model, tok, "choice", data=str(p))
    p.write_text("\n")
    with pytest.raises(DataError, match="no items"):
        evaluate(model, tok, "choice", data=str(p))
    with pytest.raises(DataError, match="does not exist"):
        evaluate(model, tok, "arc", data=str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="did you mean 'builtin:choice-sample'"):
        evaluate(model, tok, "choice", data="builtin:choice-sampel")


def test_limit_and_builtin_set(tiny):
    model, tok = tiny
    res = evaluate(model, tok, "choice", limit=5)
    assert res.n == 5 and 0.0 <= res.metrics["acc"] <= 1.0
    assert res.settings["data_file"].endswith("choice-sample.jsonl")
