"""``greenllm control restore`` and ``greenllm control show``. No torch here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

control_app = typer.Typer(
    help="Hardware power control: show it, restore after a hard kill.", no_args_is_help=True
)


def _dirs(control_dir: Path | None) -> list[Path]:
    from ..control.journal import search_dirs

    return [control_dir] if control_dir else search_dirs()


@control_app.command("restore")
def restore_cmd(
    journal: Path | None = typer.Option(None, "--journal", help="Restore only this journal file."),
    control_dir: Path | None = typer.Option(
        None,
        "--dir",
        help="Control directory (default: $GREENLLM_CONTROL_DIR, else "
        "/var/lib/greenllm/control and ~/.cache/greenllm/control).",
    ),
) -> None:
    """Put back the original setting recorded by a capped run that was killed.

    Only journals whose writer is gone (its device lock is free) are restored, through
    greenllm's own adapters with the value checked against the device's range."""
    from ..control.base import restore_from_journal, restore_stale
    from ..errors import HardwareControlError

    if journal is not None:
        entry = restore_from_journal(journal)
        done = [(journal, entry)] if entry is not None else []
        problems: list[str] = []
        where = str(journal)
    else:
        dirs = _dirs(control_dir)
        done, problems = restore_stale(dirs)
        where = ", ".join(str(d) for d in dirs)
    for path, entry in done:
        typer.echo(
            f"restored {entry['cap']} {entry['device_id']} to {entry['original']!r} "
            f"(was held at {entry.get('requested')!r} by pid {entry.get('pid')}); "
            f"removed {path}"
        )
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise HardwareControlError(problems[0] + more)
    if not done:
        typer.echo(f"nothing to restore: no journal in {where}")


def _probe(kind: str) -> dict:
    from ..errors import GreenLLMError

    try:
        if kind == "nvml":
            from ..control.nvml import NvmlPowerCap

            cap = NvmlPowerCap()
            lo, hi = cap.allowed()
            return {
                "available": True,
                "current": cap.get(),
                "allowed": [lo, hi],
                "describe": cap.describe(),
            }
        from ..control.jetson import JetsonPowerMode

        jcap = JetsonPowerMode()
        return {
            "available": True,
            "current": jcap.get(),
            "allowed": jcap.allowed(),
            "describe": jcap.describe(),
        }
    except GreenLLMError as exc:
        return {"available": False, "reason": str(exc)}


def _journal_status(path: Path) -> dict:
    from ..control.journal import lock_holder, read_journal
    from ..errors import GreenLLMError

    holder = lock_holder(path.with_suffix(".lock"))
    try:
        entry = read_journal(path)
    except GreenLLMError as exc:
        return {"path": str(path), "journal": None, "refused": str(exc), "held_by": holder}
    return {"path": str(path), "journal": entry, "refused": None, "held_by": holder}


@control_app.command("show")
def show_cmd(
    journal: Path | None = typer.Option(None, "--journal"),
    control_dir: Path | None = typer.Option(None, "--dir"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Show the power controls this machine offers and every journal (held or stale)."""
    from ..control.journal import control_dir as default_dir
    from ..control.journal import journals_in
    from ..devices import detect_device

    if journal is not None:
        found = [_journal_status(journal)] if journal.exists() or journal.is_symlink() else []
        dirs = [journal.parent]
    else:
        dirs = _dirs(control_dir)
        found = [_journal_status(p) for d in dirs for p in journals_in(d)]
    first = found[0] if found else None
    out: dict[str, Any] = {
        "device": detect_device().to_dict(),
        "control_dir": str(default_dir()),
        "searched": [str(d) for d in dirs],
        "journals": found,
        "journal_path": first["path"] if first else None,
        "journal": first["journal"] if first else None,
        "nvml": _probe("nvml"),
        "jetson": _probe("jetson"),
    }
    if json_out:
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    typer.echo(f"device: {out['device']['profile']} (via {out['device']['via']})")
    for kind in ("nvml", "jetson"):
        info = out[kind]
        typer.echo(
            f"{kind}: "
            + (info["describe"] if info["available"] else f"unavailable ({info['reason']})")
        )
    typer.echo(f"journals are written to {out['control_dir']}")
    for item in found:
        j, path = item["journal"], item["path"]
        if item["refused"]:
            typer.echo(f"REFUSED {item['refused']}")
        elif item["held_by"] is not None:
            typer.echo(
                f"HELD {path}: {j['cap']} {j['device_id']} at {j.get('requested')!r} by "
                f"running pid {item['held_by'] or j.get('pid')} (original "
                f"{j['original']!r}; it restores it itself)"
            )
        else:
            typer.echo(
                f"PENDING journal {path}: {j['cap']} {j['device_id']} original "
                f"{j['original']!r}, left at {j.get('requested')!r} by pid "
                f"{j.get('pid')} (gone); run `greenllm control restore`"
            )
    if not found:
        typer.echo("journal: none in " + ", ".join(out["searched"]))


def register(app: typer.Typer) -> None:
    app.add_typer(control_app, name="control")
