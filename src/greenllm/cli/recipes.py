"""``greenllm recipes [list]`` and ``greenllm recipes copy NAME DIR``: the recipes shipped with
greenllm (``recipes/`` in a checkout, ``greenllm/recipes/`` in the wheel). No torch here."""

from __future__ import annotations

import json
from pathlib import Path

import typer

recipes_app = typer.Typer(
    help="The recipes shipped with greenllm: list them, copy one out.", invoke_without_command=True
)


def _list(json_out: bool) -> None:
    from ..recipe_files import list_recipes

    recipes = list_recipes()
    if json_out:
        typer.echo(
            json.dumps(
                [
                    {"name": r.name, "path": str(r.path), "description": r.description}
                    for r in recipes
                ]
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="greenllm recipes (copy one with: greenllm recipes copy NAME DIR)")
    t.add_column("name", no_wrap=True)
    t.add_column("description")
    for r in recipes:
        t.add_row(r.name, r.description)
    Console(highlight=False).print(t)


@recipes_app.callback()
def _root(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="One JSON list on stdout."),
) -> None:
    """List the shipped recipes (the same as `greenllm recipes list`)."""
    if ctx.invoked_subcommand is None:
        _list(json_out)


@recipes_app.command("list")
def list_cmd(
    json_out: bool = typer.Option(False, "--json", help="One JSON list on stdout."),
) -> None:
    """List the shipped recipes: NAME and what each one studies."""
    _list(json_out)


@recipes_app.command("copy")
def copy_cmd(
    name: str = typer.Argument(
        ...,
        help="Recipe NAME from `greenllm recipes list`, e.g. quickstart or seeds/slm-energy-edge.",
    ),
    directory: Path = typer.Argument(..., help="Directory to copy it into (created if needed)."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite an existing file."),
) -> None:
    """Copy the shipped recipe NAME into DIRECTORY, to edit and run it."""
    from ..recipe_files import copy_recipe

    dest = copy_recipe(name, directory, force=force)
    typer.echo(f"copied {name} to {dest}; run it with: greenllm run {dest}")


def register(app: typer.Typer) -> None:
    app.add_typer(recipes_app, name="recipes")
