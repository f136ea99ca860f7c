"""``greenllm measure -- CMD``, ``greenllm analyze tegrastats FILE``, ``greenllm detect``.

Only argument parsing and printing; the work is in greenllm.measure / greenllm.meters.
The human report goes to stderr (the measured command keeps stdout); ``--json`` prints one
JSON object on stdout. No torch here.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import typer

from ..errors import ConfigError, GreenLLMError

analyze_app = typer.Typer(
    help="Analyze logs recorded elsewhere (e.g. tegrastats on a Jetson).", no_args_is_help=True
)


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def report_table(report, title: str = "Energy"):
    """A rich Table of an EnergyReport; estimates are labelled in the title and rows."""
    from rich.table import Table

    label = " (ESTIMATE: modelled, not measured)" if report.estimated else ""
    t = Table(
        title=f"{title}: {report.energy_j:.3f} J over {report.duration_s:.3f} s, "
        f"{report.mean_power_w:.2f} W mean, method {report.method}{label}"
    )
    for col in ("meter", "domain", "energy_j", "mean_power_w", "samples", "method", "in total"):
        t.add_column(
            col, justify="right" if col in ("energy_j", "mean_power_w", "samples") else "left"
        )
    if report.idle_power_w is not None:
        t.add_column("idle_power_w", justify="right")
        t.add_column("net_energy_j", justify="right")
    for d in report.domains:
        row = [
            d.meter,
            d.domain,
            f"{d.energy_j:.3f}",
            f"{d.mean_power_w:.2f}",
            str(d.samples),
            d.method + (" (estimate)" if d.estimated and d.method != "estimate" else ""),
            "yes" if d.in_total else "no",
        ]
        if report.idle_power_w is not None:
            row += [
                f"{d.idle_power_w:.2f}" if d.idle_power_w is not None else "-",
                f"{d.net_energy_j:.3f}" if d.net_energy_j is not None else "-",
            ]
        t.add_row(*row)
    return t


def _measure_cmd(
    ctx: typer.Context,
    hz: float = typer.Option(10.0, "--hz", help="Sampling rate of the meters."),
    idle_s: float = typer.Option(0.0, "--idle-s", help="Seconds of idle baseline before CMD."),
    trace: Path | None = typer.Option(None, "--trace", help="Record every sample to this CSV."),
    meter: list[str] | None = typer.Option(
        None, "--meter", help="Meter to use (repeatable); default: auto."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Run CMD (no shell) under the energy meters; exit with CMD's exit code.

    Usage: greenllm measure [OPTIONS] -- CMD [ARGS]...
    """
    from ..measure import measure
    from ..meters import METERS

    cmd = list(ctx.args)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ConfigError(
            "greenllm measure: no command given; usage: greenllm measure "
            "[--hz N] [--json] -- CMD [ARGS]..."
        )
    from ..limits import check_number, check_writable_file

    check_number(hz, "--hz", 0.1, 1000, unit="samples per second")
    check_number(idle_s, "--idle-s", 0, 3600, unit="seconds")
    if trace is not None:  # before CMD runs: a run must not be lost to an unwritable trace
        check_writable_file(trace, "--trace")
    meters: str | list[str] = "auto"
    if meter:
        for name in meter:
            METERS.check(name)
        meters = list(meter)
    with measure(meters=meters, hz=hz, idle_s=idle_s, trace=trace) as m:
        try:
            proc = _run_forwarding_signals(cmd)
        except FileNotFoundError:
            raise GreenLLMError(f"command not found: {cmd[0]!r}") from None
        except PermissionError:
            raise GreenLLMError(f"command is not executable: {cmd[0]!r}") from None
    report = m.report
    assert report is not None  # set by measure's __exit__
    if json_out:
        out = report.to_dict()
        out["command"] = cmd
        out["returncode"] = proc.returncode
        typer.echo(json.dumps(out))
    else:
        con = _console(stderr=True)
        con.print(report_table(report, title=f"greenllm measure: {' '.join(cmd)}"))
        if report.estimated:
            con.print(
                "[bold yellow]estimate[/]: no energy counter or power sensor is readable "
                "here; CPU power is modelled from TDP and utilisation (see `greenllm "
                "detect`)."
            )
        for f in report.flags:
            con.print(f"flag: {f}")
        if report.trace_path:
            con.print(f"trace: {report.trace_path}")
    rc = proc.returncode
    raise typer.Exit(128 - rc if rc < 0 else rc)  # killed by signal N -> 128 + N, as a shell


def _run_forwarding_signals(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run ``cmd`` and wait for it; SIGTERM and SIGHUP sent to greenllm are passed on to it
    (so ``kill greenllm`` never leaves the measured command running), and the report still
    covers the window up to the command's exit."""
    import signal
    import threading

    proc = subprocess.Popen(cmd)

    def forward(signum, _frame):
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, forward)
    try:
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # Ctrl-C: pass it on, let the command finish, re-raise
            forward(signal.SIGINT, None)
            proc.wait()
            raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(cmd, rc)


def _analyze_tegrastats(
    file: Path = typer.Argument(..., help="A log captured with tegrastats."),
    interval_ms: float = typer.Option(
        1000.0, "--interval-ms", help="tegrastats --interval used (for lines without timestamps)."
    ),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Energy, mean power and per-rail breakdown of a tegrastats log."""
    from ..limits import check_number
    from ..meters.tegrastats import analyze_file

    check_number(interval_ms, "--interval-ms", 1, 3_600_000, unit="ms")
    res = analyze_file(file, interval_ms)
    if json_out:
        typer.echo(json.dumps(res))
        return
    from rich.table import Table

    t = Table(
        title=f"tegrastats {file}: {res['energy_j']:.3f} J over {res['duration_s']:.3f} s, "
        f"{res['mean_power_w']:.3f} W mean (total = {' + '.join(res['total_rails'])})"
    )
    for col in ("rail", "mean_power_w", "energy_j", "in total"):
        t.add_column(col)
    for name, r in res["rails"].items():
        t.add_row(
            name,
            f"{r['mean_power_w']:.3f}",
            f"{r['energy_j']:.3f}",
            "yes" if name in res["total_rails"] else "no",
        )
    con = _console()
    con.print(t)
    gpu = res["gpu_util_mean_pct"]
    con.print(
        f"samples {res['samples']}, skipped lines {res['skipped_lines']} (of which "
        f"{res['truncated_lines']} truncated or garbled), GPU util mean "
        + (f"{gpu:.1f} %" if gpu is not None else "n/a")
    )


def _detect_cmd(json_out: bool = typer.Option(False, "--json")) -> None:
    """List every meter: which measure() would use here, and why the others cannot."""
    from ..meters.detect import detect_meters

    det = detect_meters()
    for m in det.meters:
        m.close()
    data = det.to_json()
    if json_out:
        typer.echo(json.dumps(data))
        return
    from rich.table import Table

    t = Table(
        title="greenllm meters"
        + (" (only an ESTIMATE is possible here)" if data["estimated"] else "")
    )
    for col in ("meter", "status", "detail"):
        t.add_column(col)
    for row in data["meters"]:
        status = "used" if row["chosen"] else ("available" if row["available"] else "unavailable")
        t.add_row(row["meter"], status, row["detail"])
    _console().print(t)


def register(app: typer.Typer) -> None:
    app.command(
        "measure",
        context_settings={
            "allow_extra_args": True,
            "ignore_unknown_options": True,
            "allow_interspersed_args": False,
        },
    )(_measure_cmd)
    analyze_app.command("tegrastats")(_analyze_tegrastats)
    app.add_typer(analyze_app, name="analyze")
    app.command("detect")(_detect_cmd)
