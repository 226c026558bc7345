"""The house rules of every package, read from the source (AST): the arrows, the names, the sizes.

- No import cycle in any package, not even through an import inside a function (imports under
  ``if TYPE_CHECKING:`` are annotations only and do not count).
- No private name (``_x``) is imported from another module; private *modules* (``segcore_x._blocks``) may be.
- Core has at most 12 entries directly in ``segcore/``; no library file is over 500 lines (data tables aside) and
  no library function over 80.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGES = ("segcore", "segcore_datasets", "segcore_segnext", "segcore_segvit", "segcore_segdeformer", "segcore_cli")
# Tables of data, not code: the paper datasets' class names, palettes and label maps.
DATA_TABLES = {"segcore_datasets/meta.py"}
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
MAX_CORE_ENTRIES = 12


def package_root(name: str) -> Path:
    return Path(importlib.import_module(name).__file__).resolve().parent


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(name: str) -> dict[str, Path]:
    root = package_root(name)
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def type_checking_nodes(tree: ast.AST) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return hidden


def imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    hidden = type_checking_nodes(tree)
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in hidden]


def imported_modules(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0 and node.module:
        # ``from segcore.weights import hub`` imports the submodule segcore.weights.hub.
        return [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return []


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """``module -> modules of the same package it imports``.

    A module's import of its own parent package is left out: Python runs the package's ``__init__`` first anyway.
    """
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in imports(ast.parse(path.read_text())):
            for target in imported_modules(node):
                if target in files and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or ``None`` (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def all_modules() -> dict[str, Path]:
    return {name: path for package in PACKAGES for name, path in sources(package).items()}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(files: dict[str, Path], known: dict[str, Path]) -> list[str]:
    """``file:line: from M import _x`` for every private name taken from another first-party module."""
    found = []
    for name, path in files.items():
        for node in imports(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level or node.module not in known:
                continue
            for alias in node.names:
                if _private(alias.name) and f"{node.module}.{alias.name}" not in known:
                    found.append(f"{path.name}:{node.lineno}: from {node.module} import {alias.name} (in {name})")
    return found


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        f"{path.name}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES
    ]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package):
    cycle = find_cycle(import_graph(sources(package)))
    assert cycle is None, f"import cycle in {package}: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("package", PACKAGES)
def test_no_private_name_crosses_a_module(package):
    assert private_imports(sources(package), all_modules()) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_files_and_functions_stay_short(package):
    root = package_root(package)
    too_long = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_FILE_LINES and rel not in DATA_TABLES:
            too_long.append(f"{rel} ({lines} lines)")
        too_long += long_functions(path)
    assert too_long == [], f"over {MAX_FILE_LINES} lines per file or {MAX_FUNCTION_LINES} per function"


def test_core_has_at_most_twelve_entries():
    entries = sorted(p.name for p in package_root("segcore").iterdir() if p.name != "__pycache__")
    assert len(entries) <= MAX_CORE_ENTRIES, entries


def test_core_rooms_explain_themselves():
    """Every sub-package of core opens with a docstring saying what it owns."""
    for init in sorted(package_root("segcore").glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.split()) >= 8, f"{init.parent.name}/__init__.py needs a docstring paragraph"


# The layers of weight I/O, bottom up: a module never reaches one above it, even through a third module.
BELOW = {
    "segcore.weights.state_dict": (
        "segcore.weights.convert",
        "segcore.weights.pretrained",
        "segcore.weights.hub",
        "segcore.weights.checkpoints",
    ),
    "segcore.weights.convert": (
        "segcore.weights.transformers_format",
        "segcore.weights.pretrained",
        "segcore.weights.hub",
    ),
    "segcore.models.model_config": ("segcore.weights.pretrained", "segcore.weights.hub", "segcore.weights.checkpoints"),
    "segcore.weights.transformers_format": (
        "segcore.weights.pretrained",
        "segcore.weights.hub",
        "segcore.weights.checkpoints",
    ),
    "segcore.weights.cards": ("segcore.weights.pretrained", "segcore.weights.hub", "segcore.weights.checkpoints"),
    "segcore.weights.pretrained": ("segcore.weights.hub", "segcore.weights.checkpoints"),
    "segcore.weights.hub": ("segcore.weights.checkpoints",),
}


@pytest.mark.parametrize("module", sorted(BELOW), ids=sorted(BELOW))
def test_weight_io_layer_imports_nothing_above_it(module):
    above = {*BELOW[module], "segcore.models.model"} & reachable(import_graph(sources("segcore")), module)
    assert not above, f"{module} imports {sorted(above)}, which sit above it"


# Rooms that sit below others never reach up, not even through a third module (docs/architecture.md, "arrows").
NEVER_REACHES = {
    "segcore.config": ("plugins", "models", "weights", "data", "evaluation", "train", "tools"),
    "segcore.plugins": ("models", "weights", "data", "evaluation", "train", "tools"),
    "segcore.data": ("models", "weights", "evaluation", "train", "tools"),
    "segcore.models": ("evaluation", "train", "tools"),
    "segcore.weights": ("evaluation", "train", "tools"),
    "segcore.evaluation": ("train", "tools"),
    "segcore.train": ("tools",),
}


@pytest.mark.parametrize("room", sorted(NEVER_REACHES), ids=sorted(NEVER_REACHES))
def test_rooms_point_one_way(room):
    graph = import_graph(sources("segcore"))
    upper = tuple(f"segcore.{r}" for r in NEVER_REACHES[room])
    bad = {
        f"{name} -> {target}"
        for name in graph
        if name == room or name.startswith(room + ".")
        for target in reachable(graph, name)
        if target in upper or target.startswith(tuple(u + "." for u in upper))
    }
    assert not bad, sorted(bad)[:5]


def test_checkers_see_what_they_claim_to(tmp_path):
    pkg = tmp_path / "segcore"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from segcore import b\n")
    (pkg / "b.py").write_text("def f():\n    from segcore.train import c\n")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import segcore.a\n")
    files = {module_name(p, pkg): p for p in sorted(pkg.rglob("*.py"))}
    graph = import_graph(files)
    assert graph["segcore.b"] == {"segcore.train.c", "segcore.train"} and find_cycle(graph) is None
    (pkg / "train" / "c.py").write_text("def g():\n    import segcore.a\n    from segcore.b import _f, f\n")
    graph = import_graph(files)
    assert find_cycle(graph) == ["segcore.a", "segcore.b", "segcore.train.c", "segcore.a"]
    assert private_imports(files, files) == ["c.py:3: from segcore.b import _f (in segcore.train.c)"]
    (pkg / "b.py").write_text("def f():\n" + "    x = 1\n" * MAX_FUNCTION_LINES)
    assert long_functions(pkg / "b.py") == [f"b.py:1 f ({MAX_FUNCTION_LINES + 1} lines)"]
