"""``greenllm control restore`` and ``greenllm control show``. No torch here."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

control_app = typer.Typer(help="Hardware power control: show it, restore after a hard kill.",
                          no_args_is_help=True)


@control_app.command("restore")
def restore_cmd(journal: Optional[Path] = typer.Option(
        None, "--journal", help="Journal file (default ~/.cache/greenllm/control-journal.json).")
) -> None:
    """Put back the original setting recorded by an interrupted capped run."""
    from ..control.base import default_journal_path, restore_from_journal

    path = journal or default_journal_path()
    entry = restore_from_journal(path)
    if entry is None:
        typer.echo(f"nothing to restore: no journal at {path}")
        return
    typer.echo(f"restored {entry['cap']} to {entry['original']!r} (was held at "
               f"{entry.get('requested')!r} by pid {entry.get('pid')}); removed {path}")


def _probe(kind: str) -> dict:
    from ..errors import GreenLLMError

    try:
        if kind == "nvml":
            from ..control.nvml import NvmlPowerCap

            cap = NvmlPowerCap()
            lo, hi = cap.allowed()
            return {"available": True, "current": cap.get(), "allowed": [lo, hi],
                    "describe": cap.describe()}
        from ..control.jetson import JetsonPowerMode

        cap = JetsonPowerMode()
        return {"available": True, "current": cap.get(), "allowed": cap.allowed(),
                "describe": cap.describe()}
    except GreenLLMError as exc:
        return {"available": False, "reason": str(exc)}


@control_app.command("show")
def show_cmd(journal: Optional[Path] = typer.Option(None, "--journal"),
             json_out: bool = typer.Option(False, "--json")) -> None:
    """Show the power controls this machine offers and any pending journal."""
    from ..control.base import default_journal_path, read_journal
    from ..devices import detect_device

    path = journal or default_journal_path()
    out = {"device": detect_device().to_dict(), "journal_path": str(path),
           "journal": read_journal(path), "nvml": _probe("nvml"), "jetson": _probe("jetson")}
    if json_out:
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    typer.echo(f"device: {out['device']['profile']} (via {out['device']['via']})")
    for kind in ("nvml", "jetson"):
        info = out[kind]
        typer.echo(f"{kind}: " + (info["describe"] if info["available"] else
                                  f"unavailable ({info['reason']})"))
    if out["journal"]:
        j = out["journal"]
        typer.echo(f"PENDING journal {path}: {j['cap']} original {j['original']!r}, held at "
                   f"{j.get('requested')!r} by pid {j.get('pid')}; run `greenllm control restore`")
    else:
        typer.echo(f"journal: none at {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(control_app, name="control")
