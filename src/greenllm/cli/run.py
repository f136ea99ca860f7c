"""`greenllm run RECIPE`, `greenllm validate RECIPE`, `greenllm report DIR`. No torch here:
validate and report work on a machine without it; run imports it through the runner."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        recipe: Path = typer.Argument(..., help="Recipe YAML file."),
        out: Path | None = typer.Option(
            None,
            "--out",
            "-o",
            help="Output directory (default: the recipe's 'output', else runs/<name>).",
        ),
        resume: bool = typer.Option(
            True, "--resume/--fresh", help="Resume from the store in DIR (default) or start over."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
        when: str | None = typer.Option(
            None,
            "--when",
            help="now, or low-carbon: wait (within --deadline) for the start with the lowest "
            "expected emissions in the forecast (carbon.intensity_series / carbon.provider).",
        ),
        deadline: str | None = typer.Option(
            None, "--deadline", help="The run must end within this, e.g. 8h (default 8h)."
        ),
        cluster: str | None = typer.Option(
            None,
            "--cluster",
            help="A study's Ray cluster: 'ray' (RAY_ADDRESS, else the local Ray cluster) or "
            "ray://HOST:PORT. Devices 'via: ray:<label>' run on the nodes with that resource.",
        ),
        only_device: str | None = typer.Option(
            None,
            "--only-device",
            help="Run only this device's cells of a study, here (merge the stores with "
            "'greenllm compare').",
        ),
        shared_out: bool = typer.Option(
            False,
            "--shared-out",
            help="The output directory is mounted at the same path on every Ray node: "
            "compressed models go by path, not through Ray's object store.",
        ),
    ) -> None:
        """Compress, evaluate and benchmark every variant of RECIPE, then write the report."""
        import functools

        from ..runner import run as run_

        run = functools.partial(
            run_, cluster=cluster, only_device=only_device, shared_out=shared_out
        )
        try:
            summary = _run_with_carbon(run, recipe, out, resume, quiet, when, deadline)
        except KeyboardInterrupt:
            typer.echo(
                "greenllm: interrupted; finished results are in the store, run the same "
                "command again to resume",
                err=True,
            )
            raise typer.Exit(130) from None
        done, skipped = summary.done, summary.skipped
        typer.echo(
            f"{summary.status}: {len(summary.variants)} variants "
            f"({done.get('steps', 0)} steps, {done.get('evals', 0)} evals, "
            f"{done.get('benches', 0)} benches run; {skipped.get('variants', 0)} variants "
            f"already in the store) -> {summary.out_dir / 'report.md'}"
        )

    @app.command("validate")
    def validate_cmd(recipe: Path = typer.Argument(..., help="Recipe YAML file.")) -> None:
        """Check RECIPE (keys, step/eval/meter names, settings) without running anything."""
        from ..preflight import preflight
        from ..recipe import load_recipe

        r = load_recipe(recipe)
        preflight(r)  # calibration where a step needs it; local paths exist
        models = ", ".join(f"{n} ({m.id})" for n, m in r.model_list()) if r.models else r.model.id
        typer.echo(
            f"ok: {r.name}: model{'s' if r.models else ''} {models}, baseline + "
            f"{len(r.variants)} variants ({', '.join(r.variants) or 'none'}), {len(r.evals)} "
            f"evals, meters {r.meters if isinstance(r.meters, str) else ', '.join(r.meters)}"
            + (f", devices {', '.join(d.name for d in r.devices)}" if r.devices else "")
        )
        if r.is_study:
            _print_fit(r)

    @app.command("report")
    def report_cmd(
        directory: Path = typer.Argument(..., help="Run directory (or its greenllm.sqlite)."),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Write the report here (default: DIRECTORY)."
        ),
    ) -> None:
        """Rebuild report.md/.tex/.html, results.json/.csv, emissions.csv and plots from
        the store."""
        from ..limits import check_writable_dir
        from ..report.build import write_report

        if out is not None:
            check_writable_dir(out, "--out")
        files = write_report(directory, out)
        typer.echo(f"wrote {len(files)} files to {files[0].parent if files else out}")


def _run_with_carbon(run, recipe_path, out, resume, quiet, when, deadline, clock=None, sleep=None):
    """Plan a carbon-aware start (and fetch the intensity forecast) when the recipe or the
    options ask for it, wait, run, then record what the report needs (cli/carbon_run.py)."""
    import time

    from ..errors import ConfigError
    from ..recipe import load_recipe
    from ..schedule import ScheduleCancelled
    from . import carbon_run

    r = load_recipe(recipe_path)
    when = when or r.schedule.when
    if when not in ("now", "low-carbon"):
        raise ConfigError(f"--when: {when!r} is not 'now' or 'low-carbon'")
    if deadline is not None and when != "low-carbon":
        raise ConfigError("--deadline: only with --when low-carbon")
    if when == "now" and not r.carbon.provider and not r.carbon.intensity_series:
        from ..schedule import DECISION_FILE

        # an older scheduled run's decision would be reported as this run's
        (carbon_run.out_dir(r, out) / DECISION_FILE).unlink(missing_ok=True)
        return run(r, out, resume=resume, progress=not quiet)

    def echo(msg: str) -> None:
        typer.echo(msg, err=True)

    target = carbon_run.out_dir(r, out)
    clock = clock or time.time
    p = carbon_run.plan(r, target, when, deadline, echo=echo, clock=clock)
    if p.decision is not None and p.decision.wait_s > 0:
        try:
            carbon_run.wait(p.decision, echo=echo, clock=clock, sleep=sleep or time.sleep)
        except ScheduleCancelled as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(130) from None
    started = clock()
    summary = run(r, out, resume=resume, progress=not quiet)
    carbon_run.record(r, p, started, clock(), echo=echo)
    from ..report.build import write_report

    summary.report_files = write_report(summary.out_dir, summary.out_dir)
    return summary


def _print_fit(recipe) -> None:
    """Per cell: the peak-memory estimate against the device's usable memory."""
    from ..runner import plan
    from ..study_fit import fit_cells

    units = plan(recipe)
    typer.echo("memory (estimated peak for inference; see docs/devices.md):")
    for f in fit_cells(recipe, units):
        est = f.estimate.describe() if f.estimate is not None else "unknown"
        have = f"{f.usable_bytes / 2**30:.2f} GiB usable" if f.usable_bytes else "usable unknown"
        if f.verdict:
            verdict = f.verdict
        elif f.estimate is None or f.usable_bytes is None:
            verdict = f.note
        else:
            verdict = f"fits ({f.note})" if f.note else "fits"
        typer.echo(f"  {f.model} / {f.variant} @ {f.device}: {est}; {have}: {verdict}")
