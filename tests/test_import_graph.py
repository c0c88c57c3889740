"""The package's modules import each other without cycles, type-only imports included.

A cycle makes the import order matter and the layering unreadable: a module
can no longer be understood (or tested) before the one it depends on. Every
``import`` statement counts, at module level, under ``TYPE_CHECKING`` or inside
a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import llmlb_actors

ROOT = Path(llmlb_actors.__file__).parent
PACKAGE = "llmlb_actors"

#: Edges a cycle may use: the public API makes `ProviderConfig` and `BaseProvider`
#: name each other (``ProviderConfig(provider=MyProvider)``, ``MyProvider(config)``),
#: so the provider base class imports the config for its annotations only.
ALLOWED = {("llmlb_actors.providers._base", "llmlb_actors._config")}


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = (path, is_package)
    return found


def _targets(
    module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]
) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".")
        if not is_package:
            base.pop()
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module.
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module → the package modules it imports (any import statement anywhere in it)."""
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for module, (path, is_package) in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges.update(
                    t
                    for t in _targets(module, is_package, node, known)
                    if t in known and t != module
                )
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_package() -> None:
    graph = import_graph()
    assert "llmlb_actors._balancer" in graph
    assert "llmlb_actors._config" in graph["llmlb_actors._balancer"]
    # A type-only import counts: the allowed edge is one.
    assert "llmlb_actors._config" in graph["llmlb_actors.providers._base"]


def test_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    graph = import_graph()
    for source, target in ALLOWED:
        assert target in graph[source], f"stale allowance {source} -> {target}"
        graph[source].discard(target)
    assert cycles(graph) == []
