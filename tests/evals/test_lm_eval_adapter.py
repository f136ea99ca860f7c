"""The lm_eval adapter runs a local lm-eval task on the in-memory model (no network) and
agrees with greenllm's own choice scoring on the same items."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("lm_eval")

from greenllm.config import parse_config, to_dict  # noqa: E402
from greenllm.errors import ConfigError, GreenLLMError  # noqa: E402
from greenllm.evals import evaluate  # noqa: E402
from greenllm.evals.lm_eval import LmEvalConfig, flatten_results  # noqa: E402

ITEMS = [
    {"context": "The sky is", "choices": ["blue", "green"], "label": 0},
    {"context": "One, two,", "choices": ["three", "four"], "label": 0},
    {"context": "Cats say", "choices": ["woof", "meow", "moo"], "label": 1},
    {"context": "Hot and", "choices": ["cold", "warm"], "label": 0},
]


@pytest.fixture
def local_task(tmp_path):
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ITEMS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "local.yaml").write_text(
        "task: greenllm_local_choice\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{context}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        "doc_to_target: label\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )
    return data, tasks


def test_config_round_trips_and_needs_tasks():
    cfg = parse_config(LmEvalConfig, {"tasks": ["arc_easy"], "limit": 5})
    assert parse_config(LmEvalConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="tasks"):
        parse_config(LmEvalConfig, {})


def test_flatten_results():
    res = {"t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc,strict": 0.2}}
    assert flatten_results(res, "t") == {"acc": 0.5, "acc_stderr": 0.1}


def test_local_task_matches_choice(tiny, local_task, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model, tok = tiny
    data, tasks = local_task
    ours = evaluate(model, tok, "choice", data=str(data))
    theirs = evaluate(
        model,
        tok,
        "lm_eval",
        tasks=["greenllm_local_choice"],
        include_path=str(tasks),
        include_defaults=False,
        batch_size=2,
    )
    assert theirs.n == 4 and theirs.task == "lm_eval:greenllm_local_choice"
    assert theirs.metrics["acc"] == pytest.approx(ours.metrics["acc"])
    assert theirs.metrics["acc_norm"] == pytest.approx(ours.metrics["acc_norm"])


def test_unknown_task_is_one_greenllm_error(tiny, local_task):
    model, tok = tiny
    with pytest.raises(GreenLLMError, match="lm_eval failed on tasks no_such_task_xyz"):
        evaluate(
            model,
            tok,
            "lm_eval",
            tasks=["no_such_task_xyz"],
            include_path=str(local_task[1]),
            include_defaults=False,
        )
