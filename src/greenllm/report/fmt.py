"""Cell formatting shared by every table writer (tables.py, crosstab.py): numbers with three
significant digits, signed percentages, percentage points, a Markdown table and a booktabs
tabular. Display only; the documents keep the internal units. No torch."""

from __future__ import annotations

import math
from typing import Any

from .escape import md_text, tex_text

DASH = "—"
BASELINE = "baseline"


def is_baseline(v: dict[str, Any]) -> bool:
    """The variant is its group's uncompressed baseline (``variant`` is the plain variant name
    of a study cell, whose ``name`` is a label; a plain report's name is the variant)."""
    return v.get("variant", v.get("name")) == BASELINE


def num(x: Any, digits: int = 3) -> str:
    if x is None or isinstance(x, bool) or (isinstance(x, float) and not math.isfinite(x)):
        return DASH
    x = float(x)
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if mag >= 5:
        return f"{x:,.0f}"
    decimals = max(0, digits - 1 - mag)
    return f"{x:,.{decimals}f}"


def pct(d: Any, ci: Any = None, signed: bool = True) -> str:
    if d is None:
        return DASH
    s = f"{d:+.1f} %" if signed else f"{d:.1f} %"
    return s + (f" ± {ci:.1f}" if ci is not None else "")


def pp(d: Any, se: Any = None) -> str:
    if d is None:
        return DASH
    return f"{d:+.1f} pp" + (f" ± {se:.1f}" if se is not None else "")


def md_cell(s: str) -> str:
    return md_text(s)  # no raw HTML, links, emphasis or table breaks from names


def md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(md_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def tex(s: Any) -> str:
    return tex_text(s)


def tex_table(
    head: list[str], rows: list[list[str]], caption: str, label: str, left: int = 1
) -> list[str]:
    """A booktabs table (``left`` left-aligned text columns, the rest right-aligned); every
    cell and the caption are escaped here, ``label`` must already be a label key."""
    return [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{" + "l" * left + "r" * (len(head) - left) + "}",
        r"\toprule",
        " & ".join(tex(h) for h in head) + r" \\",
        r"\midrule",
        *(" & ".join(tex(c) for c in r) + r" \\" for r in rows),
        r"\bottomrule",
        r"\end{tabular}",
        r"\caption{" + tex(caption) + "}",
        r"\label{" + label + "}",
        r"\end{table}",
        "",
    ]
