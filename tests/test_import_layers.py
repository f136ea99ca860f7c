"""Imports point one way: the import graph of ``src/greenllm``, read with ``ast``, follows the
layer order written down in docs/architecture.md ("Imports point one way").

Every import counts: module level, inside functions, under ``if TYPE_CHECKING``, relative
ones resolved. A module may import its own layer or any layer below it, never one above;
modules of one layer never import each other in a cycle, and no two modules do. A Registry
target (a ``"module:attr"`` string) is data, not an import: it is how a lower layer names a
handler above it (``models.checkpoint.RESTORERS``, ``steps.base.STEPS``).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "greenllm"

# Top to bottom. A component is the first name under greenllm (a module or a package);
# "greenllm" itself (the package __init__, the public API) is the component "api".
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli", ("cli", "__main__", "testing")),
    ("api", ("api",)),
    ("runner", ("runner",)),
    ("study", ("recipe", "study", "study_fit", "training", "report")),
    ("work", ("steps", "evals", "bench", "metered")),
    ("engine", ("models", "sizes", "decode", "measure", "runtimes", "export")),
    (
        "hardware",
        (
            "meters",
            "devices",
            "control",
            "carbon",
            "intensity",
            "schedule",
            "store",
            "store_proxy",
            "cluster",
            "conditions",
            "memory",
        ),
    ),
    (
        "leaf",
        (
            "results",
            "embodied",
            "units",
            "registry",
            "config",
            "errors",
            "builtin_data",
            "paths",
            "provenance",
            "fsutil",
            "recipe_files",
            "grad_mode",
            "limits",
            "modelfiles",
            "preflight",
            "outdir",
            "_logging",
            "_compat",
            "_version",
            "stats",
            "modeldims",
            "memory_steps",
            "memory_train",
        ),
    ),
]
# Steps and evals never import meters, measure or control: the runner wraps them. The
# measurement side never imports the model side at all (it works on readings and results).
MODEL_SIDE = {
    "models",
    "sizes",
    "steps",
    "evals",
    "bench",
    "decode",
    "metered",
    "runtimes",
    "export",
}
NEVER = {
    "steps": {"meters", "measure", "control"},
    "evals": {"meters", "measure", "control"},
    **{comp: MODEL_SIDE for comp in ("meters", "measure", "control", "carbon", "store", "report")},
}
# These never import torch (or transformers) at module level, also through what they import.
LEAN = (
    "api",
    "cli",
    "meters",
    "measure",
    "control",
    "carbon",
    "recipe",
    "store",
    "report",
    "memory",
    "modeldims",
    "memory_steps",
    "memory_train",
)
HEAVY = ("torch", "transformers")

LAYER_OF = {comp: i for i, (_, comps) in enumerate(LAYERS) for comp in comps}


def _modules() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package __init__)."""
    out = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        if any(
            not (d / "__init__.py").exists() for d in path.parents if d.is_relative_to(SRC / ROOT)
        ):
            continue  # a script in a data folder (greenllm/data/_build_samples.py)
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "api"


def _in_function(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return True
    return False


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        child, node = node, parents[node]
        if isinstance(node, ast.If) and child in node.body:
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                return True
    return False


def _target(name: str) -> str:
    """The most specific greenllm module that ``name`` is or lies in."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str):
    """Yield (imported module or external top-level name, line, runs at import time)."""
    path, is_pkg = MODULES[module]
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module if is_pkg else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        at_import = not _in_function(node, parents) and not _type_checking_only(node, parents)
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                assert base, f"{module}:{node.lineno}: relative import above the package"
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES]
            # ``from pkg import submodule`` imports the submodule; other names come from mod
            names = subs if len(subs) == len(node.names) else [mod, *subs]
        for name in names:
            if name == ROOT or name.startswith(ROOT + "."):
                yield _target(name), node.lineno, at_import
            else:
                yield name.split(".")[0], node.lineno, at_import


def _graph():
    edges: dict[str, dict[str, int]] = defaultdict(dict)  # module -> {imported: line}
    runtime: dict[str, set[str]] = defaultdict(set)  # module-level greenllm imports
    heavy: dict[str, tuple[str, int]] = {}  # module-level torch imports
    for module in MODULES:
        for name, line, at_import in _imports(module):
            if name in MODULES:
                if name != module:
                    edges[module].setdefault(name, line)
                    if at_import:
                        runtime[module].add(name)
            elif at_import and name in HEAVY and module not in heavy:
                heavy[module] = (name, line)
    return edges, runtime, heavy


EDGES, RUNTIME, HEAVY_AT_IMPORT = _graph()


def _where(module: str, line: int) -> str:
    return f"{MODULES[module][0].relative_to(SRC.parent)}:{line}"


def _find_cycle(nodes, succ) -> list[str] | None:
    """One cycle of the directed graph (nodes, succ) as [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(succ(n)):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(nodes):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_graph_is_read():
    """The parser sees the edges the architecture relies on (guards against a silent no-op)."""
    assert len(MODULES) > 50
    assert "greenllm.meters.base" in EDGES["greenllm.measure"]
    assert "greenllm.models.checkpoint" in EDGES["greenllm.models.load"]  # relative, from .
    assert "greenllm.carbon" in EDGES["greenllm.report.build"]  # ``from .. import carbon``
    assert "greenllm.runner" in EDGES["greenllm.cli.run"]  # inside a function
    assert "greenllm.bench" in RUNTIME["greenllm"]
    assert component("greenllm") == "api" and component("greenllm.steps.base") == "steps"


def test_every_module_has_a_layer():
    missing = sorted({component(m) for m in MODULES} - set(LAYER_OF))
    assert not missing, (
        f"components {missing} are in no layer: add each to LAYERS in "
        "tests/test_import_layers.py and to docs/architecture.md"
    )


def test_imports_point_down_the_layers():
    bad = []
    for module, targets in sorted(EDGES.items()):
        src = component(module)
        for target, line in sorted(targets.items()):
            dst = component(target)
            if LAYER_OF.get(dst, -1) < LAYER_OF.get(src, -1):
                bad.append(
                    f"{_where(module, line)}: {module} ({LAYERS[LAYER_OF[src]][0]}) "
                    f"imports {target} ({LAYERS[LAYER_OF[dst]][0]}), a layer above it"
                )
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_model_side_and_the_measurement_side_meet_only_above_them():
    """Steps and evals never import meters, measure or control (the runner wraps them);
    meters, measure, control, carbon, store and report never import models, steps, evals,
    bench or decode."""
    bad = [
        f"{_where(m, line)}: {m} imports {t}"
        for m, targets in sorted(EDGES.items())
        for t, line in sorted(targets.items())
        if component(t) in NEVER.get(component(m), ())
    ]
    assert not bad, "imports across the sides:\n" + "\n".join(bad)


def test_no_import_cycle_between_modules():
    cycle = _find_cycle(MODULES, lambda n: EDGES.get(n, {}))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_between_components_of_a_layer():
    succ: dict[str, set[str]] = defaultdict(set)
    for module, targets in EDGES.items():
        for target in targets:
            a, b = component(module), component(target)
            if a != b and LAYER_OF.get(a) == LAYER_OF.get(b):
                succ[a].add(b)
    cycle = _find_cycle(LAYER_OF, lambda n: succ.get(n, set()))
    assert cycle is None, "components of one layer import each other: " + " -> ".join(cycle)


def _loaded_by(module: str) -> set[str]:
    """greenllm modules executed by ``import module``: parents, module-level imports, closure."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages
        todo += RUNTIME.get(m, ())
    return seen


@pytest.mark.parametrize("comp", LEAN)
def test_lean_layers_never_import_torch_at_module_level(comp):
    bad = []
    for module in sorted(m for m in MODULES if component(m) == comp):
        for loaded in sorted(_loaded_by(module)):
            if loaded in HEAVY_AT_IMPORT:
                name, line = HEAVY_AT_IMPORT[loaded]
                via = "" if loaded == module else f" (loaded by import {module})"
                bad.append(f"{_where(loaded, line)}: {loaded} imports {name} at module level{via}")
    assert not bad, f"{comp} must import without torch:\n" + "\n".join(sorted(set(bad)))


def test_the_architecture_page_lists_these_layers():
    """docs/architecture.md writes the same order down, layer by layer."""
    text = (SRC.parent / "docs" / "architecture.md").read_text()
    section = text.split("## Imports point one way", 1)[1].split("\n## ", 1)[0]
    table = []
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if not row.startswith("|") or not cells[0].isdigit():
            continue
        names = tuple(n.strip(" `") for n in cells[2].split(","))
        table.append((cells[1].strip("`"), names))
    assert table == LAYERS, (
        "docs/architecture.md 'Imports point one way' and LAYERS in "
        "tests/test_import_layers.py differ"
    )
