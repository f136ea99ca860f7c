"""Names are data: a recipe or variant name never changes the structure of report.tex,
report.md or a plot (issue 17: '% # & $' went raw into \\label, emoji broke pdflatex, report.md
kept <script> and javascript: links, two '$' crashed matplotlib)."""

from __future__ import annotations

import re

import pytest

from greenllm.report.build import write_report
from greenllm.report.escape import md_text, mpl_text, tex_label, tex_text
from greenllm.results import BenchResult, DomainEnergy, EnergyReport
from greenllm.store import Store

HOSTILE = [
    "50% #1 & $x$_{y}~^\\",
    "a$b$c$^$",
    "emoji 🔥 é 中文",
    "<script>alert(1)</script>",
    "[click](javascript:alert(1))",
    "*bold* `code` | pipe !",
    "x\\end{document}",
]

# what may follow a backslash in escaped text, and the math the escaper itself emits
_TEX_OK = re.compile(
    r"\\(textbackslash|textasciitilde|textasciicircum|textless|textgreater|"
    r"ldots)\{\}|\\[&%$#_{}]|\$(\\[a-zA-Z]+|\^2)\$"
)


def _assert_inert_tex(text: str) -> None:
    """No LaTeX special character survives except inside the escaper's own sequences."""
    rest = _TEX_OK.sub("", text)
    assert not set(rest) & set("\\&%$#_{}~^"), (text, rest)
    assert all(" " <= c <= "~" for c in text), text  # ASCII only: plain pdflatex


@pytest.mark.parametrize("name", HOSTILE)
def test_tex_text_is_inert(name):
    _assert_inert_tex(tex_text(name))


def test_tex_text_keeps_letters_and_names_code_points():
    assert tex_text("café") == "cafe"
    assert tex_text("🔥") == "[U+1F525]"
    assert tex_text("a_b") == r"a\_b"
    assert tex_label("50% #1 & $x$") == "50-1-x"
    assert tex_label("") == "unnamed"


@pytest.mark.parametrize("name", HOSTILE)
def test_md_text_has_no_html_or_links(name):
    out = md_text(name)
    assert "<" not in out and ">" not in out
    assert re.search(r"(?<!\\)\[", out) is None and re.search(r"(?<!\\)`", out) is None
    assert "\n" not in out


def test_mpl_text_has_no_unescaped_dollar():
    assert re.search(r"(?<!\\)\$", mpl_text("a$b$c$")) is None


def _store(tmp_path, recipe_name: str, variant: str):
    d = DomainEnergy(
        meter="rapl",
        domain="package-0",
        energy_j=10.0,
        mean_power_w=1.0,
        samples=10,
        method="counter",
    )
    energy = EnergyReport(
        duration_s=10.0,
        energy_j=10.0,
        mean_power_w=1.0,
        domains=(d,),
        samples=10,
        sampling_hz=10.0,
        method="counter",
        estimated=False,
        meters=("rapl",),
    )

    def bench(j):
        return BenchResult(
            metrics={
                "energy_per_request_j": j,
                "energy_per_token_j": j / 8,
                "e2e_latency_s": 0.1,
                "size_bytes": 1000,
                "tokens_per_wh": 100.0,
                "edp_js": 0.1,
            },
            ci95={"energy_per_token_j": 0.001},
            meter="rapl",
            estimated=False,
            repeats=3,
            workload={"prompts": "builtin:prompts", "max_new_tokens": 8},
            energy=energy,
        )

    names = ["baseline", variant]
    plan = [
        {"name": n, "variant_key": f"v{i}", "eval_keys": [], "bench_key": f"b{i}", "steps": []}
        for i, n in enumerate(names)
    ]
    recipe = {
        "name": recipe_name,
        "model": {"id": "m"},
        "carbon": {"intensity_g_per_kwh": 300},
        "workload": {
            "prompts": "builtin:prompts",
            "max_new_tokens": 8,
            "repeats": 3,
            "min_window_s": 0,
        },
    }
    with Store(tmp_path) as s:
        run = s.begin_run(recipe_name, recipe, plan)
        for i, n in enumerate(names):
            s.ensure_variant(f"v{i}", n, {"steps": []}, 0, run)
            s.add_bench(f"b{i}", f"v{i}", bench(2.0 - i * 0.5), run)
        s.finish_run(run, "finished")
    return tmp_path


@pytest.mark.parametrize("name", HOSTILE)
def test_report_files_with_hostile_names(tmp_path, name):
    out = _store(tmp_path, name, name)
    files = write_report(out)  # two '$' used to crash matplotlib mathtext here
    assert any(f.suffix == ".png" for f in files)
    tex = (out / "report.tex").read_text()
    assert all(" " <= c <= "~" or c == "\n" for c in tex), "non-ASCII in report.tex"
    label = re.search(r"\\label\{([^}]*)\}", tex).group(1)
    assert re.fullmatch(r"tab:greenllm-[A-Za-z0-9.:-]+", label), label
    assert tex_text(name) in tex
    for line in tex.splitlines():
        if line.startswith("%"):
            continue
        # '%' starts a comment: every one left in the body is escaped
        assert re.search(r"(?<!\\)%", line) is None, line
    md = (out / "report.md").read_text()
    assert "<script" not in md.lower() and re.search(r"(?<!\\)\]\(javascript:", md) is None
    assert md_text(name) in md
