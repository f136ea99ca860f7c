"""greenllm.save / load_model round trips: identical outputs for every method that reloads,
refusal with nothing written for those that do not, greenllm.json contents."""

from __future__ import annotations

import copy
import json

import pytest

torch = pytest.importorskip("torch")

from greenllm.errors import ModelError  # noqa: E402
from greenllm.models import load_model, model_size_bytes, save  # noqa: E402
from greenllm.steps import apply_step  # noqa: E402
from greenllm.steps.quantize import QUANT_METHODS  # noqa: E402
from greenllm.testing import tiny_model_and_tokenizer  # noqa: E402

RELOADS = [m for m in QUANT_METHODS.names() if QUANT_METHODS.get(m).reloads]
REFUSED = ["dynamic_int8", "torchao_int8_weight", "torchao_int8_dynamic", "bnb_nf4"]


@pytest.fixture(scope="module")
def tiny_pair():
    return tiny_model_and_tokenizer(0)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(3))


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def _leftovers(parent):
    return sorted(p.name for p in parent.iterdir())


def test_reloadable_methods_are_declared():
    assert {"int8_weight", "bf16", "fp16", "quanto_int8", "quanto_int4", "quanto_float8"} <= set(
        RELOADS
    )
    for m in REFUSED:
        assert not QUANT_METHODS.get(m).reloads and QUANT_METHODS.get(m).why_not_reload


@pytest.mark.parametrize("method", RELOADS)
def test_save_reload_identical_outputs(method, tiny_pair, ids, tmp_path):
    model, tok = tiny_pair
    model = copy.deepcopy(model)
    if method in ("gptq", "awq"):  # calibrated: a few windows of the built-in text
        from greenllm.builtin_data import resolve_data
        from greenllm.steps.base import StepContext

        ctx = StepContext(
            tokenizer=tok, calibration=str(resolve_data("builtin:wiki-sample", "calibration"))
        )
        model, res = apply_step(
            model,
            "quantize",
            {"method": method, "group_size": 32, "calibration": {"samples": 4, "seq_len": 32}},
            ctx,
        )
    else:
        model, res = apply_step(model, "quantize", {"method": method})
    ref = _logits(model, ids)
    out = save(model, tmp_path / "ckpt", tok)
    assert _leftovers(tmp_path) == ["ckpt"]
    again, tok2 = load_model(str(out))
    assert torch.equal(_logits(again, ids), ref)
    assert model_size_bytes(again) == model_size_bytes(model)
    assert type(again.model.layers[0].mlp.down_proj) is type(model.model.layers[0].mlp.down_proj)
    assert tok2("hello")["input_ids"] == tok("hello")["input_ids"]
    steps = again._greenllm["steps"]
    assert steps[0]["step"] == "quantize" and steps[0]["config"]["method"] == method


def test_greenllm_json_records_steps_layers_and_versions(tiny_pair, tmp_path):
    model, tok = tiny_pair
    model = copy.deepcopy(model)
    with torch.no_grad():  # a pruned-looking layer: half its weights zero
        w = model.model.layers[1].mlp.up_proj.weight
        w[:, : w.shape[1] // 2] = 0
    model, _ = apply_step(model, "quantize", {"method": "int8_weight"})
    save(model, tmp_path / "c", tok)
    rec = json.loads((tmp_path / "c" / "greenllm.json").read_text())
    assert rec["format"] == "greenllm-checkpoint/1"
    assert rec["size_bytes"] == model_size_bytes(model)
    assert [s["step"] for s in rec["steps"]] == ["quantize"]
    assert rec["steps"][0]["config"]["ignore"] == ["lm_head"]
    layers = rec["layers"]
    assert layers["model.layers.1.mlp.up_proj"]["format"] == "int8_weight"
    assert layers["model.layers.1.mlp.up_proj"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert layers["model.layers.0.mlp.up_proj"]["sparsity"] < 0.05
    assert layers["lm_head"]["format"] == "float32"
    assert {"torch", "transformers"} <= set(rec["packages"])
    # int8 storage on disk: the safetensors file is well under the fp32 size
    fp32_bytes = sum(p.numel() * 4 for p in tiny_pair[0].parameters())
    assert (tmp_path / "c" / "model.safetensors").stat().st_size < 0.6 * fp32_bytes


def test_unquantized_model_round_trips(tiny_pair, ids, tmp_path):
    model, tok = tiny_pair
    out = save(model, tmp_path / "plain", tok)
    again, _ = load_model(str(out))
    assert torch.equal(_logits(again, ids), _logits(model, ids))
    assert json.loads((out / "greenllm.json").read_text())["steps"] == []


@pytest.mark.parametrize("method", REFUSED)
def test_non_reloadable_is_refused_with_nothing_written(method, tiny_pair, tmp_path):
    if method.startswith("bnb"):
        pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed")
    model, tok = tiny_pair
    model, _ = apply_step(copy.deepcopy(model), "quantize", {"method": method})
    with pytest.raises(ModelError, match=rf"{method}.*does not reload.*nothing was written"):
        save(model, tmp_path / "out", tok)
    assert _leftovers(tmp_path) == []


def test_quantized_outside_greenllm_is_refused(tiny_pair, tmp_path):
    """A torch.ao model the user quantized by hand carries no greenllm step record."""
    from torch.ao.quantization import quantize_dynamic

    model = quantize_dynamic(copy.deepcopy(tiny_pair[0]), {torch.nn.Linear}, torch.qint8)
    with pytest.raises(ModelError, match="does not reload"):
        save(model, tmp_path / "out")
    assert _leftovers(tmp_path) == []


def test_existing_directory_needs_overwrite(tiny_pair, ids, tmp_path):
    model, tok = tiny_pair
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "keep.txt").write_text("user data")
    with pytest.raises(ModelError, match="already exists"):
        save(model, target, tok)
    assert (target / "keep.txt").read_text() == "user data"
    # overwrite replaces a saved model, never unrelated files (issue 17)
    with pytest.raises(ModelError, match="not part of a saved model"):
        save(model, target, tok, overwrite=True)
    assert (target / "keep.txt").read_text() == "user data"
    (target / "keep.txt").unlink()
    save(model, target, tok)
    save(model, target, tok, overwrite=True)  # over a checkpoint: allowed
    assert (target / "greenllm.json").exists()
    assert _leftovers(tmp_path) == ["ckpt"]


def test_failure_while_writing_leaves_nothing(tiny_pair, tmp_path):
    class BrokenTokenizer:
        def save_pretrained(self, path):
            raise OSError("disk full")

    with pytest.raises(ModelError, match="disk full.*nothing was written"):
        save(tiny_pair[0], tmp_path / "out", BrokenTokenizer())
    assert _leftovers(tmp_path) == []


def test_corrupt_greenllm_json_is_a_model_error(tiny_pair, tmp_path):
    model, tok = tiny_pair
    model, _ = apply_step(copy.deepcopy(model), "quantize", {"method": "int8_weight"})
    out = save(model, tmp_path / "c", tok)
    (out / "greenllm.json").write_text("{not json")
    with pytest.raises(ModelError, match="greenllm.json"):
        load_model(str(out))


def test_missing_quantized_tensor_is_a_model_error(tiny_pair, tmp_path):
    from safetensors.torch import load_file, save_file

    model, tok = tiny_pair
    model, _ = apply_step(copy.deepcopy(model), "quantize", {"method": "int8_weight"})
    out = save(model, tmp_path / "c", tok)
    state = load_file(str(out / "model.safetensors"))
    del state["model.layers.0.mlp.up_proj.weight_scale"]
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelError, match="weight_scale.*missing"):
        load_model(str(out))


def test_saved_files_honour_the_umask(tiny_pair, tmp_path, umask, tree_modes):
    """save_pretrained writes model.safetensors through mkstemp (0600); the saved checkpoint
    gets the modes of any tool's output: 0644 / 0755 under umask 022, 0600 / 0700 under 077."""
    fmode, dmode = umask
    model, tok = tiny_pair
    out = save(copy.deepcopy(model), tmp_path / "ckpt", tok)
    modes = tree_modes(out)
    assert "model.safetensors" in modes and "greenllm.json" in modes
    assert {k: oct(v) for k, v in modes.items()} == {
        k: oct(dmode if (out / k).is_dir() else fmode) for k in modes
    }
