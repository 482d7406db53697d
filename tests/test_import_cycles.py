"""No new import cycles inside alphaedit_lite (issue 14's first step).

Every relative import in the package (module level or inside a function) is an edge; the test finds
the strongly connected components of that graph. The two cycles that exist today are listed in
KNOWN and must not grow; any other cycle fails with the modules named. Issue 14 removes KNOWN.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "alphaedit_lite"
KNOWN = [{"alphaedit_lite.keys", "alphaedit_lite.stats"},
         {"alphaedit_lite.cli", "alphaedit_lite.edit_cli", "alphaedit_lite.sequential"}]


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        out[".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__")] = p
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.level > 0):
                continue
            base = pkg
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            target = base + ("." + node.module if node.module else "")
            hits = [t for t in [target] + [f"{target}.{a.name}" for a in node.names] if t in mods]
            graph[m].update(t for t in hits if t != m)
    return graph


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


def test_no_new_import_cycles():
    found = cycles(import_graph())
    new = [c for c in found if c not in KNOWN]
    assert not new, "new import cycle(s): " + "; ".join(" <-> ".join(sorted(c)) for c in new)


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []
