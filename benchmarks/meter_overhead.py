"""Overhead of measure() on a CPU workload: the same pure-Python work with and without
measure() at 10 Hz and 50 Hz, interleaved repeats, median wall time and the ratio against
the unmeasured baseline of the same run. Goal: <= 1 % at 10 Hz.

    python benchmarks/meter_overhead.py [--repeats 7] [--work-s 2.0] [--meter estimate]

On a shared or busy machine the numbers are noisy: look at the spread column.
"""

from __future__ import annotations

import argparse
import statistics
import time

from greenllm.measure import measure


def workload(n: int) -> int:
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1_000_003
    return acc


def calibrate(target_s: float) -> int:
    n = 200_000
    while True:
        t = time.perf_counter()
        workload(n)
        dt = time.perf_counter() - t
        if dt > 0.2:
            return int(n * target_s / dt)
        n *= 2


def timed(n: int, hz: float | None, meters) -> float:
    t = time.perf_counter()
    if hz is None:
        workload(n)
    else:
        with measure(meters=meters, hz=hz):
            workload(n)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--work-s", type=float, default=2.0)
    ap.add_argument(
        "--meter",
        action="append",
        default=None,
        help="meter name(s); default: auto (what measure() picks here)",
    )
    args = ap.parse_args()
    meters = args.meter or "auto"
    n = calibrate(args.work_s)
    configs = [("baseline (no measure)", None), ("measure 10 Hz", 10.0), ("measure 50 Hz", 50.0)]
    times: dict[str, list[float]] = {name: [] for name, _ in configs}
    timed(n // 10, 10.0, meters)  # warm-up: imports, meter detection
    for r in range(args.repeats):
        order = configs if r % 2 == 0 else list(reversed(configs))  # interleave
        for name, hz in order:
            times[name].append(timed(n, hz, meters))
    with measure(meters=meters, hz=10) as m:
        pass
    base = statistics.median(times["baseline (no measure)"])
    print(
        f"meters: {', '.join(m.report.meters)}"
        + (" (estimate)" if m.report.estimated else "")
        + f"; work per run {base:.2f} s; "
        f"{args.repeats} interleaved repeats"
    )
    base_min = min(times["baseline (no measure)"])
    print(
        f"{'config':<24}{'median_s':>10}{'min_s':>10}{'max_s':>10}{'ratio_med':>11}"
        f"{'ratio_min':>11}{'overhead_med':>14}"
    )
    for name, _ in configs:
        ts = times[name]
        med = statistics.median(ts)
        print(
            f"{name:<24}{med:>10.3f}{min(ts):>10.3f}{max(ts):>10.3f}{med / base:>11.4f}"
            f"{min(ts) / base_min:>11.4f}{(med / base - 1) * 100:>13.2f}%"
        )
    ratio10 = statistics.median(times["measure 10 Hz"]) / base
    with measure(meters=meters, hz=0) as probe:
        k = 2000
        t = time.perf_counter()
        for _ in range(k):
            probe.sample()
        per_sample_s = (time.perf_counter() - t) / k
    print(
        f"cost of one sample (all meters read once): {per_sample_s * 1e6:.1f} us -> "
        f"{per_sample_s * 10 * 100:.3f} % of one core at 10 Hz, "
        f"{per_sample_s * 50 * 100:.3f} % at 50 Hz"
    )
    min10 = min(times["measure 10 Hz"]) / base_min
    print(
        f"goal <= 1 % at 10 Hz: median {'met' if ratio10 <= 1.01 else 'NOT met'} "
        f"({(ratio10 - 1) * 100:+.2f} %), best-of-{args.repeats} "
        f"{'met' if min10 <= 1.01 else 'NOT met'} ({(min10 - 1) * 100:+.2f} %)"
    )


if __name__ == "__main__":
    main()
