"""tegrastats parser, log analysis and process meter on real recorded lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from greenllm.errors import DataError, MeterError
from greenllm.meters.tegrastats import TegrastatsMeter, analyze, analyze_file, parse_line, parse_log
from greenllm.testing import FakeClock, recorded_runner

DATA = Path(__file__).resolve().parents[1] / "data" / "tegrastats"


def _lines(name):
    return (DATA / name).read_text().splitlines()


def _first(name):
    return next(s for s in map(parse_line, _lines(name)) if s is not None)


# board -> (file, expected summed rails, expected total W of the first sample)
BOARDS = {
    "nano": ("nano_r32.log", ["POM_5V_IN"], 2.746),
    "tx2-a": ("tx2_r32_a.log", ["VDD_IN"], 3.140),
    "tx2-b": ("tx2_r32_b.log", ["VDD_IN"], 5.297),
    "agx-xavier": (
        "agx_xavier_r32.log",
        ["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"],
        (463 + 618 + 2936 + 0 + 309 + 3306) / 1000,
    ),
    "orin-nx-nano": ("orin_nx_nano_r36.log", ["VDD_IN"], 17.946),
    # VDDQ_VDD2_1V8AO (301 mW) is part of VIN_SYS_5V0: listed, not added
    "agx-orin": (
        "agx_orin_r36.log",
        ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"],
        (2340 + 390 + 4025) / 1000,
    ),
}


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_board_aware_total(board):
    name, rails, total_w = BOARDS[board]
    s = _first(name)
    got_w, summed = s.total_power_w()
    assert summed == rails
    assert got_w == pytest.approx(total_w)
    assert "NC" not in s.rails


def test_old_tx1_format_without_rails():
    s = _first("tx1_r28.log")
    assert s.cpu_load_pct == (17, 13, 29, 5)
    assert s.cpu_freq_mhz == (408, 408, 408, 408)
    assert s.gpu_util_pct == 3 and s.gpu_freq_mhz == (76,)
    assert s.rails == {} and s.total_power_w() == (0, [])
    assert s.ram_used_mb == 3468 and s.ram_total_mb == 3983


def test_field_forms():
    nano = _first("nano_r32.log")
    assert nano.rails["POM_5V_IN"].cur_mw == 2746 and nano.rails["POM_5V_IN"].avg_mw == 2911
    assert nano.gpu_util_pct == 7 and nano.gpu_freq_mhz == (768,)
    assert nano.timestamp_s is None
    tx2 = _first("tx2_r32_a.log")
    assert tx2.gpu_util_pct == 0 and tx2.gpu_freq_mhz == ()  # "GR3D_FREQ 0%"
    assert "RAM" not in tx2.rails and "SWAP" not in tx2.rails
    orin = _first("orin_nx_nano_r36.log")
    assert orin.timestamp_s is not None
    assert orin.gpu_util_pct == 84 and orin.gpu_freq_mhz == (713,)  # "84%@[713]"
    assert orin.cpu_freq_mhz[-1] == 247
    assert orin.temps_c["tj"] == pytest.approx(65.562)
    agx = _first("agx_orin_r36.log")
    assert agx.gpu_freq_mhz == (0, 0)  # "0%@[0,0]"
    assert agx.temps_c["CV0"] is None and agx.temps_c["GPU"] is None  # -256C: sensor absent
    assert agx.temps_c["CPU"] == pytest.approx(44.562)
    assert len(agx.cpu_load_pct) == 12
    xavier = _first("agx_xavier_r32.log")
    assert xavier.rails["CPU"].cur_mw == 618  # rail, not the CPU list
    assert len(xavier.cpu_load_pct) == 8 and xavier.temps_c["PMIC"] == 100


def test_off_cores_and_cur_avg_max():
    # Synthetic variants of the real Orin line (kept in code, not in tests/data): cores
    # switched off, and the cur/avg/max rail form some releases print.
    line = _lines("orin_nx_nano_r36.log")[0]
    off = line.replace("CPU [97%@1984,95%@1984,", "CPU [97%@1984,off,")
    s = parse_line(off)
    assert s.cpu_load_pct[1] is None and s.cpu_freq_mhz[1] is None
    triple = line.replace("VDD_IN 17946mW/15710mW", "VDD_IN 17946mW/15710mW/18000mW")
    r = parse_line(triple).rails["VDD_IN"]
    assert (r.cur_mw, r.avg_mw, r.max_mw) == (17946, 15710, 18000)


def test_prompts_and_blank_lines_are_skipped_and_counted():
    log = parse_log(_lines("agx_xavier_r32.log"))
    assert len(log.samples) == 1 and log.skipped_lines == 1  # the shell prompt
    log = parse_log(_lines("nano_r32.log"))
    assert len(log.samples) == 2 and log.skipped_lines == 1  # the blank line


def test_analyze_nano_by_interval():
    res = analyze(parse_log(_lines("nano_r32.log")), interval_ms=500)
    assert set(res) == {
        "samples",
        "skipped_lines",
        "duration_s",
        "energy_j",
        "mean_power_w",
        "total_rails",
        "rails",
        "gpu_util_mean_pct",
        "truncated_lines",
    }
    assert res["samples"] == 2 and res["duration_s"] == pytest.approx(0.5)
    assert res["energy_j"] == pytest.approx(0.5 * (2.746 + 2.980) / 2)
    assert res["mean_power_w"] == pytest.approx((2.746 + 2.980) / 2)
    assert res["total_rails"] == ["POM_5V_IN"]
    assert res["rails"]["POM_5V_GPU"]["energy_j"] == pytest.approx(0.5 * (0.159 + 0.238) / 2)
    assert res["gpu_util_mean_pct"] == pytest.approx(3.5)


def test_analyze_uses_timestamps_when_present(tmp_path):
    # The timestamps (not the interval) give the duration: the real line, and a synthetic
    # copy of it stamped 2 s later (kept in code, not in tests/data).
    line = _lines("orin_nx_nano_r36.log")[0]
    later = line.replace("05-15-2025 18:30:28", "05-15-2025 18:30:30")
    res = analyze(parse_log([line, later]), interval_ms=100)
    assert res["duration_s"] == pytest.approx(2.0)
    assert res["energy_j"] == pytest.approx(2 * 17.946)


def test_analyze_without_rails_and_without_gpu():
    res = analyze(parse_log(_lines("tx1_r28.log")), interval_ms=1000)
    assert res["energy_j"] == 0 and res["total_rails"] == [] and res["rails"] == {}
    assert res["gpu_util_mean_pct"] == pytest.approx(21.0)


def test_no_parseable_line_is_a_data_error(tmp_path):
    p = tmp_path / "junk.log"
    p.write_text("hello\n\nnvidia@jetson:~$ tegrastats\n")
    with pytest.raises(DataError, match="no parseable tegrastats line"):
        analyze_file(p)
    with pytest.raises(DataError, match="cannot read"):
        analyze_file(tmp_path / "missing.log")


def test_meter_runs_tegrastats_without_shell():
    runner = recorded_runner(_lines("agx_xavier_r32.log"))
    clock = FakeClock()
    m = TegrastatsMeter(
        interval_ms=50, runner=runner, which=lambda n: "/usr/bin/tegrastats", clock=clock
    )
    assert m.available()[0]
    r = m.read()
    assert runner.argv == ["/usr/bin/tegrastats", "--interval", "50"]
    assert r.power_w["SOC"] == pytest.approx(2.936)
    assert {d.name for d in m.domains() if d.in_total} == {
        "GPU",
        "CPU",
        "SOC",
        "CV",
        "VDDRQ",
        "SYS5V",
    }
    assert m.skipped_lines == 1
    m.close()
    assert runner.proc.returncode == -15


def test_meter_unavailable_and_exit():
    ok, reason = TegrastatsMeter(which=lambda n: None).available()
    assert not ok and "not on PATH" in reason
    m = TegrastatsMeter(
        runner=recorded_runner(["garbage"], exit_after=True), which=lambda n: "/x/tegrastats"
    )
    with pytest.raises(MeterError, match="exited before"):
        m.read()
