"""Core's modules import each other one way: no cycle, not even through imports inside functions.

The graph is read from the source (AST): every ``import`` and ``from ... import`` of a ``segcore`` module counts,
at module level or inside a function, except under ``if TYPE_CHECKING:`` (annotations only). A function-level
import that closes a circle is a hidden cycle, so it counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import segcore

ROOT = Path(segcore.__file__).resolve().parent


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return hidden


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        # ``from segcore import hub`` imports the submodule segcore.weights.hub.
        return [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return []


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``module -> segcore modules it imports`` for every module under ``root``.

    A module's import of its own parent package is left out: Python runs the package's ``__init__`` first anyway,
    and ``segcore/__init__.py`` imports its heavy names lazily.
    """
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        hidden = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in hidden:
                continue
            for target in _imported(node):
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


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_core_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in segcore: " + " -> ".join(cycle or [])


# The layers of weight I/O, bottom up: a module never reaches one above it, even through a third module.
BELOW = {
    "segcore.weights.state_dict": (
        "segcore.weights.convert",
        "segcore.weights.pretrained",
        "segcore.weights.hub",
        "segcore.weights.checkpoints",
        "segcore.models.model",
    ),
    "segcore.weights.convert": (
        "segcore.weights.transformers_format",
        "segcore.weights.pretrained",
        "segcore.weights.hub",
        "segcore.weights.checkpoints",
        "segcore.models.model",
    ),
    "segcore.models.model_config": (
        "segcore.weights.pretrained",
        "segcore.weights.hub",
        "segcore.weights.checkpoints",
        "segcore.models.model",
    ),
    "segcore.weights.transformers_format": (
        "segcore.weights.pretrained",
        "segcore.weights.hub",
        "segcore.weights.checkpoints",
        "segcore.models.model",
    ),
    "segcore.weights.cards": (
        "segcore.weights.pretrained",
        "segcore.weights.hub",
        "segcore.weights.checkpoints",
        "segcore.models.model",
    ),
    "segcore.weights.pretrained": ("segcore.weights.hub", "segcore.weights.checkpoints", "segcore.models.model"),
    "segcore.weights.hub": ("segcore.weights.checkpoints", "segcore.models.model"),
    "segcore.weights.checkpoints": ("segcore.models.model",),
}


@pytest.mark.parametrize("module", sorted(BELOW), ids=sorted(BELOW))
def test_weight_io_layer_imports_nothing_above_it(module):
    above = set(BELOW[module]) & _reachable(import_graph(), module)
    assert not above, f"{module} imports {sorted(above)}, which sit above it"


def test_cycle_finder_sees_function_level_imports_and_skips_type_checking(tmp_path):
    pkg = tmp_path / "segcore"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from segcore import b\n")
    (pkg / "b.py").write_text("def f():\n    from segcore.train import c\n")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import segcore.a\n")
    graph = import_graph(pkg)
    assert graph["segcore.b"] == {"segcore.train.c", "segcore.train"} and find_cycle(graph) is None
    (pkg / "train" / "c.py").write_text("def g():\n    import segcore.a\n")
    assert find_cycle(import_graph(pkg)) == ["segcore.a", "segcore.b", "segcore.train.c", "segcore.a"]
