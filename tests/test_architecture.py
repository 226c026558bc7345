"""docs/architecture.md describes the house as it is: every module of core and every hook is named there."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import segcore
from segcore.plugins import hookspecs

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
CORE = Path(segcore.__file__).resolve().parent


def core_modules() -> list[str]:
    """Every module of core as a dotted name (packages by their own name), ``segcore`` itself left out."""
    names = []
    for path in sorted(CORE.rglob("*.py")):
        parts = path.relative_to(CORE.parent).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if len(parts) > 1:
            names.append(".".join(parts))
    return names


def hooks() -> list[str]:
    return [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("segcore_")]


def named(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", text) is not None


def test_every_core_module_is_named():
    text = DOC.read_text()
    missing = [m for m in core_modules() if not named(text, m)]
    assert missing == [], "docs/architecture.md does not name these modules: say what each owns"


def test_every_hook_is_named():
    text = DOC.read_text()
    assert [h for h in hooks() if not named(text, h)] == [], "docs/architecture.md does not name these hooks"


def test_the_checks_see_a_missing_name():
    assert len(hooks()) == 8 and "segcore.models.model" in core_modules()
    assert not named("segcore.models.model_config", "segcore.models.model")


def test_the_readme_layout_points_here():
    readme = (DOC.parents[1] / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    assert "docs/architecture.md" in layout[: layout.index("\n## ", 5) if "\n## " in layout[5:] else None]
