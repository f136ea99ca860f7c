"""Energy-aware training: the Zeus search, power settings around training, per-epoch energy.

Hardware is faked at the lowest boundary only: a FakePynvml module behind the real
NvmlPowerCap and control.capped(), and the real estimate meter fed fake CPU times and a fake
clock. Everything above is the real code.
"""

from __future__ import annotations

import types

import pytest

from greenllm.errors import ConfigError, HardwareControlError
from greenllm.testing import FakeClock, FakeGpu, FakePynvml
from greenllm.training import Candidate, Profile, candidates_from, search, zeus_cost  # noqa: F401

TEXT = "Power capping trades a little time for a lot of energy on many GPUs. " * 60


def _table_profile(table):
    """profile_fn from {(batch_size, limit): (seconds per sample, watts)} over 64 samples."""
    calls = []

    def profile(c):
        calls.append(c)
        t, w = table[(c.batch_size, c.power_cap_w)]
        return Profile(c, samples=64, duration_s=64 * t, energy_j=64 * t * w)

    return profile, calls


def test_search_picks_lowest_zeus_cost_from_injected_measurements():
    # (s/sample, W): bs=32 at 200 W is slower but much lower power
    table = {
        (8, 300.0): (0.010, 290.0),
        (8, 200.0): (0.012, 200.0),
        (32, 300.0): (0.006, 300.0),
        (32, 200.0): (0.0065, 198.0),
        (32, None): (0.006, 300.0),
    }
    profile, calls = _table_profile(table)
    cands = candidates_from([8, 32], power_caps_w=[300, 200])
    res = search(cands, profile, eta=0.5, default=Candidate(32), p_max_w=300.0)
    costs = {k: zeus_cost(t * w, t, 0.5, 300.0) for k, (t, w) in table.items()}
    best = min(costs, key=costs.get)
    assert (res.choice.batch_size, res.choice.power_cap_w) == best == (32, 200.0)
    assert {
        (r["batch_size"], r["power_cap_w"]): r["cost_per_sample_j"] for r in res.rows
    } == pytest.approx(costs)
    assert len(calls) == 5  # 4 candidates + the default, each profiled once
    e_default, e_choice = 0.006 * 300.0, 0.0065 * 198.0
    assert res.projected_energy_saving == pytest.approx(1 - e_choice / e_default)
    assert res.projected_time_change == pytest.approx(0.0065 / 0.006 - 1)
    assert "chosen" in res.table() and res.to_dict()["choice"]["power_cap_w"] == 200.0


def test_eta_moves_the_choice_between_energy_and_time():
    table = {(8, None): (0.010, 100.0), (16, None): (0.005, 250.0)}  # 1.0 J vs 1.25 J/sample
    profile, _ = _table_profile(table)
    cands = candidates_from([8, 16])
    assert search(cands, profile, eta=1.0, default=Candidate(16)).choice.batch_size == 8
    assert search(cands, profile, eta=0.0, default=Candidate(16)).choice.batch_size == 16
    # P_max defaults to the highest measured mean power without power limits
    assert search(cands, profile, eta=0.5, default=Candidate(16)).p_max_w == pytest.approx(250.0)


def test_search_without_power_control_is_batch_size_only():
    profile, _ = _table_profile({(8, None): (0.01, 100.0), (16, None): (0.006, 120.0)})
    res = search(candidates_from([8, 16]), profile, power_control=False, default=Candidate(8))
    assert res.note.startswith("no power control on this device: searched batch size only")
    with pytest.raises(HardwareControlError, match="no power control"):
        search(candidates_from([8], power_caps_w=[150]), profile, power_control=False)


def test_search_rejects_bad_input():
    profile, _ = _table_profile({})
    with pytest.raises(ConfigError, match="eta"):
        search([Candidate(8)], profile, eta=1.5)
    with pytest.raises(ConfigError, match="batch_sizes"):
        candidates_from([0, 8])
    with pytest.raises(ConfigError, match="not both"):
        candidates_from([8], power_caps_w=[100], power_modes=[0])


# ----------------------------------------------------------------------------- with torch
torch = pytest.importorskip("torch")


def _estimate_meter(clock, watts=50.0):
    from greenllm.meters.estimate import EstimateMeter

    busy = {"t": 0.0}

    def cpu_times():
        busy["t"] += 1.0
        return busy["t"], busy["t"]  # always fully busy -> tdp_w

    return EstimateMeter(tdp_w=watts, idle_w=0.0, cpu_times=cpu_times, clock=clock)


def _nvml_cap():
    from greenllm.control.nvml import NvmlPowerCap

    gpu = FakeGpu(power_limit_mw=400_000, default_limit_mw=400_000)
    return NvmlPowerCap(pynvml=FakePynvml(gpus=[gpu])), gpu


def _batches(tok, bs=4):
    from greenllm.steps.data import build_batches

    return build_batches(tok, [TEXT], seq_len=32, batch_size=bs, eval_fraction=0.2, max_examples=24)


def test_cap_is_restored_after_an_exception_in_the_training_loop(tmp_path, tiny):
    from greenllm.steps.train import TrainLoopConfig, causal_lm_loss
    from greenllm.training import train_with_setting

    model, tok = tiny
    cap, gpu = _nvml_cap()
    train_b, _ = _batches(tok)
    seen = []

    class Boom:
        def on_step_end(self, step, record):
            seen.append(gpu.power_limit_mw)  # the cap is in force while training
            if step == 2:
                raise RuntimeError("simulated crash in the training loop")

    journal = tmp_path / "control"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_with_setting(
            model,
            train_b,
            causal_lm_loss,
            TrainLoopConfig(epochs=1),
            Candidate(4, power_cap_w=150.0),
            cap=cap,
            meters=[_estimate_meter(FakeClock())],
            hz=0,
            hooks=[Boom()],
            journal=journal,
        )
    assert seen == [150_000, 150_000]
    assert gpu.power_limit_mw == 400_000 and gpu.set_limit_calls == [150_000, 400_000]
    assert not list(journal.glob("*.json"))


def test_cap_without_permission_is_one_line_error_and_nothing_changes(tmp_path, tiny):
    from greenllm.steps.train import TrainLoopConfig, causal_lm_loss
    from greenllm.training import train_with_setting

    model, tok = tiny
    cap, gpu = _nvml_cap()
    gpu.can_set_limit = False
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(HardwareControlError) as ei:
        train_with_setting(
            model,
            _batches(tok)[0],
            causal_lm_loss,
            TrainLoopConfig(),
            Candidate(4, power_cap_w=150.0),
            cap=cap,
            meters=[_estimate_meter(FakeClock())],
            hz=0,
            journal=tmp_path / "control",
        )
    assert "\n" not in str(ei.value)
    assert gpu.power_limit_mw == 400_000
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_real_profiler_measures_restores_weights_and_applies_cap(tmp_path, tiny):
    from greenllm.steps.train import TrainConfig
    from greenllm.training import make_profiler

    model, tok = tiny
    cap, gpu = _nvml_cap()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(data=[TEXT], seq_len=32, lr=1e-3)
    profile = make_profiler(
        model, tok, cfg, steps=2, cap=cap, meters="estimate", hz=0, journal=tmp_path / "control"
    )
    p = profile(Candidate(4, power_cap_w=200.0))
    assert p.samples == 8 and p.duration_s > 0 and p.energy_j > 0 and p.estimated
    assert gpu.set_limit_calls == [200_000, 400_000]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_energy_aware_train_searches_then_trains_with_epoch_energy(tiny):
    from greenllm.steps.train import TrainConfig
    from greenllm.training import energy_aware_train

    model, tok = tiny
    # batch 8 costs less per sample than batch 2 in these injected measurements
    profile, _ = _table_profile({(2, None): (0.02, 40.0), (8, None): (0.008, 45.0)})
    cfg = TrainConfig(
        data=[TEXT], seq_len=32, batch_size=2, epochs=2, lr=3e-3, eval_fraction=0.2, max_examples=40
    )
    res, rep, energy = energy_aware_train(
        model, tok, cfg, batch_sizes=[2, 8], cap=None, profile_fn=profile, meters="estimate"
    )
    assert res.choice.batch_size == 8 and res.default.batch_size == 2
    assert res.projected_energy_saving == pytest.approx(1 - (0.008 * 45) / (0.02 * 40))
    assert rep.epochs_run == 2 and rep.last_loss < rep.first_loss
    assert all(e["energy_j"] >= 0 and "energy_per_token_j" in e for e in rep.epochs)
    assert energy.estimated and energy.energy_j >= sum(e["energy_j"] for e in rep.epochs) - 1e-9
    with pytest.raises(HardwareControlError, match="no power control"):
        energy_aware_train(
            model, tok, cfg, batch_sizes=[2], power_caps_w=[100.0], cap=None, profile_fn=profile
        )


def test_epoch_energy_hook_with_fake_clock(tiny):
    from greenllm.measure import measure
    from greenllm.steps.train import TrainLoopConfig, train_loop
    from greenllm.training import EpochEnergyHook

    model, tok = tiny
    clock = FakeClock()
    train_b, _ = _batches(tok)

    class Tick:  # every step "takes" 0.5 s of the fake clock
        def on_step_end(self, step, record):
            clock.advance(0.5)

    with measure([_estimate_meter(clock, watts=20.0)], hz=0, clock=clock) as m:
        clock.advance(3.0)  # work before training is not charged to epoch 0
        hook = EpochEnergyHook(m, intensity_g_per_kwh=500.0)
        rep = train_loop(model, train_b, cfg=TrainLoopConfig(epochs=2), hooks=[Tick(), hook])
    n = len(train_b)
    for e in rep.epochs:
        assert e["energy_j"] == pytest.approx(20.0 * 0.5 * n)
        assert e["emissions_g"] == pytest.approx(20.0 * 0.5 * n / 3.6e6 * 500.0)
        assert e["energy_estimated"] is True


def test_energy_callback_records_per_epoch_energy_and_carbon():
    from greenllm.measure import measure
    from greenllm.training import EnergyCallback

    clock = FakeClock()
    meter = _estimate_meter(clock, watts=100.0)
    cb = EnergyCallback(
        intensity_g_per_kwh=400.0,
        measure_factory=lambda meters, hz: measure([meter], hz=0, clock=clock),
    )
    from transformers import TrainerCallback

    assert isinstance(cb, TrainerCallback)
    state = types.SimpleNamespace(epoch=0.0, global_step=0)
    cb.on_train_begin(None, state, None)
    for epoch, secs in enumerate((2.0, 3.0), 1):
        clock.advance(secs)
        state.epoch, state.global_step = float(epoch), 10 * epoch
        cb.on_epoch_end(None, state, None)
    cb.on_train_end(None, state, None)
    assert [r["energy_j"] for r in cb.records] == pytest.approx([200.0, 300.0])
    assert [r["duration_s"] for r in cb.records] == pytest.approx([2.0, 3.0])
    assert cb.records[1]["emissions_g"] == pytest.approx(300.0 / 3.6e6 * 400.0)
    assert cb.report.energy_j == pytest.approx(500.0)


@pytest.mark.slow
def test_energy_callback_inside_a_real_trainer(tmp_path, tiny):
    """The callback works inside transformers.Trainer (2 tiny epochs, estimate meter)."""
    from transformers import Trainer, TrainingArguments

    from greenllm.steps.data import build_batches
    from greenllm.training import EnergyCallback

    model, tok = tiny
    blocks, _ = build_batches(tok, [TEXT], seq_len=32, batch_size=1)
    rows = [{k: v[0] for k, v in b.items()} for b in blocks[:16]]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=2,
        per_device_train_batch_size=4,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
    )
    cb = EnergyCallback(meters="estimate", hz=0)
    Trainer(model=model, args=args, train_dataset=rows, callbacks=[cb]).train()
    assert len(cb.records) == 2 and all(r["energy_j"] > 0 for r in cb.records)
    assert cb.report is not None and cb.report.estimated


def test_cli_train_search_json_and_one_line_errors(tmp_path, tiny, capsys):
    from greenllm.cli import main

    model, tok = tiny
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    data = tmp_path / "d.txt"
    data.write_text(TEXT)
    rc = main(
        [
            "train-search",
            str(tmp_path / "m"),
            "--data",
            str(data),
            "--batch-sizes",
            "2,4",
            "--seq-len",
            "32",
            "--meter",
            "estimate",
            "--profile-steps",
            "1",
            "--search-only",
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    import json

    got = json.loads(out[out.index("{") :])
    assert {r["batch_size"] for r in got["search"]["rows"]} == {2, 4}
    assert got["train"] is None and got["search"]["power_control"] is False
    rc = main(["train-search", str(tmp_path / "m"), "--data", str(data), "--batch-sizes", "2,x"])
    err = capsys.readouterr().err
    assert rc == 2 and "--batch-sizes" in err and len(err.strip().splitlines()) == 1


def test_cli_train_search_missing_data_fails_before_loading_the_model(tmp_path, run_cli):
    # the model path does not exist either: the data error must come first, without loading
    rc, out, err = run_cli(
        "train-search", tmp_path / "no-model", "--data", tmp_path / "no.txt", "--batch-sizes", "2"
    )
    assert rc == 2
    assert err.strip().splitlines() == [
        f"greenllm: error: --data: {tmp_path / 'no.txt'} does "
        "not exist; give an existing file or folder, or "
        "builtin:<name>"
    ]
