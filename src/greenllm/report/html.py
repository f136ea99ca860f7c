"""report.html: one self-contained page (inline CSS, plots embedded as base64 PNG, no scripts,
no external resources). Every string from the store goes through ``html.escape``."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from . import crosstab
from .tables import DELTA_NOTE, SEED004_NOTE, main_rows, measurement_rows, seed004_rows, subject

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;
padding:4px 6px;text-align:right}th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:
left}.bad{color:#c0392b;font-weight:bold}.ok{color:#1e8449}img{max-width:100%;margin:1em 0}
p.note{font-size:13px;color:#555}"""


def e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _table(head: list[str], rows: list[list[str]]) -> str:
    out = [
        "<table>",
        "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead>",
        "<tbody>",
    ]
    for r in rows:
        cells = []
        for c in r:
            cls = (
                ' class="bad"'
                if c.startswith(("NO:", "FAIL"))
                else ' class="ok"'
                if c in ("yes", "pass", "yes: greener")
                else ""
            )
            cells.append(f"<td{cls}>{e(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{e(alt)}" src="data:image/png;base64,{data}">'


def to_html(doc: dict[str, Any], images: dict[str, tuple[Path, Path]]) -> str:
    head, rows = main_rows(doc)
    c = doc["carbon"]
    title = f"greenllm report: {doc.get('recipe')}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        (
            f"<p>{e(subject(doc))} · run "
            if doc.get("study")
            else f"<p>Model <code>{e((doc.get('model') or {}).get('id'))}</code> · run "
        )
        + f"{e(doc['run']['id'])} ({e(doc['run']['status'])}) · grid "
        f"{e(round(c['intensity_g_per_kwh']))} gCO2e/kWh, PUE {e(c['pue'])}</p>",
        "<h2>Results</h2>",
        _table(head, rows),
        f'<p class="note">{e(DELTA_NOTE)}</p>',
        *crosstab.html(doc, _table),
        "<h2>Measurement</h2>",
        _table(*measurement_rows(doc)),
    ]
    head4, rows4 = seed004_rows(doc)
    if rows4:
        parts += [
            "<h2>Evaluations: accuracy, energy and time per inference</h2>",
            _table(head4, rows4),
            f'<p class="note">{e(SEED004_NOTE)}</p>',
        ]
    if doc.get("pareto"):
        parts.append(
            "<p>Pareto frontier (" + e(doc.get("quality_metric")) + " vs energy per "
            "token): " + ", ".join(f"<code>{e(n)}</code>" for n in doc["pareto"]) + "</p>"
        )
    for stem, alt in (
        ("pareto", "Pareto frontier: quality vs energy per token"),
        ("energy_per_token", "Energy per token with 95 % CI"),
        ("study_energy_heatmap", "Energy per token: device x variant, one panel per model"),
        ("study_accuracy_energy", "Quality against energy per inference, one marker per device"),
    ):
        if stem in images:
            parts.append(_img(images[stem][0], alt))
    parts += [
        "<h2>Carbon</h2>",
        f"<p>{e(doc['carbon_statement'])}</p>",
    ]
    if doc.get("lifecycle"):
        from .tables import lifecycle_rows

        parts += [
            "<h2>Lifecycle carbon (SCI)</h2>",
            _table(*lifecycle_rows(doc)),
            f"<p>{e(doc.get('lifecycle_statement') or '')}</p>",
        ]
    parts += [
        "<h2>Methodology</h2>",
        f"<p>{e(doc['methodology'])}</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
