"""The package's imports run one way (issue 14): each module imports only from its own layer or below.

Layers, lowest first (CONTRIBUTING.md's module map describes each):

    util → core → model → locate → methods → experiments (+ world) → plots → widgets → classroom → cli

Every import of a kit module is an edge, at module level or inside a function, absolute
(``from alphaedit_lite.core.solvers import ...``) or relative. The tests fail on an edge against
the order (naming both modules and their layers), on any import cycle, on an import of the package
root from inside the package (the root only re-exports), and on a module that no layer claims.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "alphaedit_lite"
ROOT = "alphaedit_lite"

#: (layer, module prefixes), lowest first. A module belongs to the layer of its longest matching prefix.
LAYERS = [
    ("util", ["alphaedit_lite.util"]),
    ("core", ["alphaedit_lite.core"]),
    ("model", ["alphaedit_lite.model"]),
    ("locate", ["alphaedit_lite.locate"]),
    ("methods", ["alphaedit_lite.methods"]),
    ("experiments", ["alphaedit_lite.experiments", "alphaedit_lite.world"]),
    ("plots", ["alphaedit_lite.plots"]),
    ("widgets", ["alphaedit_lite.widgets"]),
    ("classroom", ["alphaedit_lite.classroom"]),
    ("cli", ["alphaedit_lite.cli", "alphaedit_lite.__main__", "alphaedit_lite.world.__main__"]),
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        out[".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """{module: kit modules it imports}, every import statement of the file included."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == ROOT]
            elif isinstance(node, ast.ImportFrom):
                if node.level > 0:
                    base = pkg
                    for _ in range(node.level - 1):
                        base = base.rsplit(".", 1)[0]
                    target = base + ("." + node.module if node.module else "")
                elif (node.module or "").split(".")[0] == ROOT:
                    target = node.module
                else:
                    continue
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                # "from pkg import module" imports the module; "from pkg import name" the package itself
                targets = subs + ([target] if len(subs) < len(node.names) else [])
            else:
                continue
            graph[m].update(t for t in targets if t in mods and t != m)
    return graph


def layer_of(module: str) -> int | None:
    best, index = "", None
    for i, (_, prefixes) in enumerate(LAYERS):
        for pre in prefixes:
            if (module == pre or module.startswith(pre + ".")) and len(pre) > len(best):
                best, index = pre, i
    return index


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    homeless = [m for m in _modules() if m != ROOT and layer_of(m) is None]
    assert not homeless, f"modules in no layer (add them to LAYERS and CONTRIBUTING.md): {homeless}"


def test_imports_run_one_way():
    graph = import_graph()
    bad = []
    for m, targets in graph.items():
        if m == ROOT:
            continue
        for t in sorted(targets):
            if t == ROOT:
                bad.append(f"{m} imports the package root (import from the module that defines the name)")
            elif layer_of(t) > layer_of(m):
                bad.append(f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycle(s): " + "; ".join(" <-> ".join(sorted(c)) for c in found)


def test_the_checks_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("alphaedit_lite.core.solvers") < layer_of("alphaedit_lite.methods.memit")
    assert layer_of("alphaedit_lite.world.__main__") == layer_of("alphaedit_lite.cli.app")
    assert layer_of("alphaedit_lite.somewhere_new") is None


def test_contributing_module_map_names_every_module():
    """CONTRIBUTING.md's module map lists every module file of the package, and every path it names exists."""
    import re

    text = (PKG.parent / "CONTRIBUTING.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(alphaedit_lite/[\w/]+\.py)`", text))
    missing_files = sorted(p for p in named if not (PKG.parent / p).is_file())
    assert not missing_files, f"CONTRIBUTING.md names files that do not exist: {missing_files}"
    short = set(re.findall(r"`(\w+\.py)`", text))         # "memit.py, alphaedit.py" after a full path
    unlisted = []
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG.parent).as_posix()
        if p.name == "__init__.py" and p.parent != PKG / "methods":
            continue
        in_world = rel.startswith("alphaedit_lite/world/") and p.name in short | {"__init__.py"}
        if rel not in named and not in_world and not (p.parent == PKG / "methods" and p.name in short):
            if not (p.parent == PKG and p.name in ("__init__.py", "__main__.py")):
                unlisted.append(rel)
    assert not unlisted, f"modules missing from CONTRIBUTING.md's module map: {unlisted}"
