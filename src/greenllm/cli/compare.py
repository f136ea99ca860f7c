"""``greenllm compare DIR [DIR ...] --out DIR``: one cross report (device x model x variant)
from stores produced separately, refused with one line when they ran different recipes or
hold the same cell twice (report/compare.py). No torch here."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare_cmd(
        directories: list[Path] = typer.Argument(
            ..., help="Output directories of 'greenllm run' (each holds a greenllm.sqlite)."
        ),
        out: Path = typer.Option(..., "--out", "-o", help="Write the cross report here."),
        label: list[str] = typer.Option(
            [],
            "--label",
            help="DIR=NAME: the device name of DIR's results (a plain recipe's store; default: "
            "the device profile its run detected, else the folder name). Repeatable.",
        ),
    ) -> None:
        """Build one report across devices and models from separately produced stores."""
        from ..limits import check_writable_dir
        from ..report.compare import compare, parse_labels

        check_writable_dir(out, "--out")
        files = compare(directories, out, parse_labels(label))
        typer.echo(f"wrote {len(files)} files to {files[0].parent if files else out}")
