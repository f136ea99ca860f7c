"""Names are data: escaping of user text (recipe, variant, task names) for each output format.

- ``tex_text``: LaTeX body text that compiles with plain pdflatex: the ten specials escaped,
  the report's own symbols as math, other non-ASCII letters reduced to ASCII (é -> e) and
  anything else (emoji, CJK) written as ``[U+XXXX]``.
- ``tex_label``: a ``\\label{}`` key: ASCII letters, digits and ``-.:`` only.
- ``md_text``: Markdown inline text with no HTML (``<``, ``>``, ``&`` as entities) and no links,
  emphasis, code spans or table breaks (``[ ] * _ ` | \\ !`` backslash-escaped).
- ``mpl_text``: matplotlib text with no mathtext (every ``$`` escaped).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "→": r"$\rightarrow$",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "—": "---",
    "–": "--",
    "·": r"$\cdot$",
    "×": r"$\times$",
    "≈": r"$\approx$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "µ": r"$\mu$",
    "²": r"$^2$",
    "…": r"\ldots{}",
    "‘": "`",
    "’": "'",
    "“": "``",
    "”": "''",
    "\u00a0": "~",
}


def _tex_char(ch: str) -> str:
    if ch in _TEX:
        return _TEX[ch]
    if " " <= ch <= "~":
        return ch
    if ch in "\n\t":
        return " "
    ascii_ = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
    if ascii_ and all(" " <= c <= "~" for c in ascii_):
        return "".join(_TEX.get(c, c) for c in ascii_)
    return f"[U+{ord(ch):04X}]"


def tex_text(s: Any) -> str:
    return "".join(_tex_char(ch) for ch in str(s))


def tex_label(s: Any) -> str:
    key = re.sub(r"[^A-Za-z0-9.:-]+", "-", str(s)).strip("-")
    return key or "unnamed"


_MD_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
_MD_BACKSLASH = set("\\`*_[]|!")


def md_text(s: Any) -> str:
    out = []
    for ch in str(s):
        if ch in _MD_ENTITIES:
            out.append(_MD_ENTITIES[ch])
        elif ch in _MD_BACKSLASH:
            out.append("\\" + ch)
        elif ch in "\r\n":
            out.append(" ")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def mpl_text(s: Any) -> str:
    return str(s).replace("$", r"\$")
