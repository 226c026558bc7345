"""The package's shape: no import cycle (imports inside functions included), no private name imported from another
module, modules under 500 lines (the ``meta.py`` tables aside) and functions under 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import segcore_datasets

PACKAGE = Path(segcore_datasets.__file__).parent
TABLES = {"meta"}  # data tables, exempt from the module size limit
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in sorted(PACKAGE.glob("*.py"))}


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """The ids of the import nodes under ``if TYPE_CHECKING:`` (they never run)."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(n) for child in node.body for n in ast.walk(child))
    return ids


def _imports(tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """Every import that runs, at any depth: ``(module, names imported from it, line)``."""
    skip = _type_checking_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((a.name, [], node.lineno) for a in node.names)
    return found


def _local_edges(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Module -> the modules of this package it imports (``from segcore_datasets import meta`` included)."""
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, tree in modules.items():
        for module, names, _ in _imports(tree):
            if module == "segcore_datasets":
                edges[name].update(n for n in names if n in modules)
            elif module.startswith("segcore_datasets."):
                edges[name].add(module.split(".")[1])
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [*path, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_cycle_finder_sees_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_including_imports_in_functions() -> None:
    assert _cycle(_local_edges(_modules())) is None


def test_no_private_name_imported_from_another_module() -> None:
    bad = [
        f"{name}.py:{line}: {module}.{n}"
        for name, tree in _modules().items()
        for module, names, line in _imports(tree)
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_modules_and_functions_are_short() -> None:
    long_modules = [
        f"{p.name}: {n} lines"
        for p in sorted(PACKAGE.glob("*.py"))
        if p.stem not in TABLES and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    long_functions = [
        f"{name}.py:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines"
        for name, tree in _modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long_modules and not long_functions, "\n".join(long_modules + long_functions)


def test_paper_factories_are_registered_from_the_table() -> None:
    import segcore_datasets.papers as papers
    from segcore_datasets.plugin import segcore_datasets as hook

    specs = hook()
    for name in papers.PAPERS:
        assert specs[name].factory == f"segcore_datasets.papers:{name.replace('-', '_')}"
        assert callable(getattr(papers, name.replace("-", "_")))
