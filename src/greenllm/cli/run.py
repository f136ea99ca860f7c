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
    ) -> None:
        """Compress, evaluate and benchmark every variant of RECIPE, then write the report."""
        from ..runner import run

        try:
            summary = run(recipe, out, resume=resume, progress=not quiet)
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
        typer.echo(
            f"ok: {r.name}: model {r.model.id}, baseline + {len(r.variants)} variants "
            f"({', '.join(r.variants) or 'none'}), {len(r.evals)} evals, meters "
            f"{r.meters if isinstance(r.meters, str) else ', '.join(r.meters)}"
        )

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
