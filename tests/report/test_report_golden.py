"""A report that is not a study is byte-for-byte what it was before studies existed: the
known-numbers store's results.json (less the run's clock times), report.md, report.tex and
results.csv equal the files recorded in tests/data/report_golden/ (written by the report code
of before the study report; regenerate only on purpose, with GREENLLM_UPDATE_GOLDEN=1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "report_golden"
FILES = ("report.md", "report.tex", "results.csv")


def _normalised_json(text: str) -> str:
    doc = json.loads(text)
    for k in ("started_at_unix_s", "finished_at_unix_s"):
        doc["run"][k] = None
    return json.dumps(doc, indent=2) + "\n"


def _outputs(run_dir: Path) -> dict[str, str]:
    out = {n: (run_dir / n).read_text() for n in FILES}
    out["results.json"] = _normalised_json((run_dir / "results.json").read_text())
    return out


def test_non_study_report_equals_the_recorded_one(run_dir):
    got = _outputs(run_dir)
    if os.environ.get("GREENLLM_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, text in got.items():
            (GOLDEN / name).write_text(text)
        pytest.skip("golden files rewritten")
    for name, text in got.items():
        assert text == (GOLDEN / name).read_text(), f"{name} changed for a non-study store"
    assert not (run_dir / "study.csv").exists()  # no study files for a plain recipe
