"""Every member builds a wheel that stands on its own: its code, py.typed, its README, its entry point, and a
dependency for every distribution its code imports (the shared dev environment would hide a missing one)."""

from __future__ import annotations

import ast
import email
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = sorted(p.parent for p in [*ROOT.glob("packages/*/pyproject.toml"), ROOT / "cli" / "pyproject.toml"])
# Import name -> distribution, for the imports whose names differ from their distribution's.
DIST_OF = {"PIL": "pillow", "yaml": "pyyaml", "huggingface_hub": "huggingface-hub"}
STDLIB = set(sys.stdlib_module_names)


def _project(member: Path) -> dict:
    return tomllib.loads((member / "pyproject.toml").read_text())["project"]


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def _imported_distributions(package_dir: Path) -> set[str]:
    """Distributions imported at module level or inside functions by the package's code (not under tests/)."""
    own = package_dir.name
    found = set()
    for file in package_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in STDLIB and top != own and top != "__future__":
                    found.add(DIST_OF.get(top, top).lower().replace("_", "-"))
    return found


# Imports that are optional by design, each guarded by an ImportError handler with a message; and pytest, which
# only segcore.testing.fixtures imports: pytest itself loads that module (the pytest11 entry point).
OPTIONAL = {
    "segcore": {"transformers", "onnx", "onnxruntime", "tensorboard", "pytest"},
    "segcore-cli": {"transformers", "onnx", "onnxruntime"},
}


REPO_DISTRIBUTIONS = {_project(m)["name"] for m in MEMBERS}
# Arrows point one way: core imports no other member; a paper plugin imports core and nothing else of the repo.
ALLOWED_MEMBERS = {
    "segcore": set(),
    "segcore-datasets": {"segcore"},
    "segcore-segnext": {"segcore"},
    "segcore-segvit": {"segcore"},
    "segcore-segdeformer": {"segcore"},
    "segcore-cli": {"segcore", "segcore-datasets"},
}


@pytest.mark.parametrize("member", MEMBERS, ids=[m.name for m in MEMBERS])
def test_member_imports_only_the_members_below_it(member):
    name = _project(member)["name"]
    (package_dir,) = [p for p in (member / "src").iterdir() if (p / "__init__.py").exists()]
    imported = _imported_distributions(package_dir) & REPO_DISTRIBUTIONS
    assert imported <= ALLOWED_MEMBERS[name], f"{name} imports {sorted(imported - ALLOWED_MEMBERS[name])}"


@pytest.mark.parametrize("member", MEMBERS, ids=[m.name for m in MEMBERS])
def test_member_declares_what_it_imports(member):
    project = _project(member)
    (package_dir,) = [p for p in (member / "src").iterdir() if (p / "__init__.py").exists()]
    declared = _requirement_names(project.get("dependencies", []))
    missing = _imported_distributions(package_dir) - declared - OPTIONAL.get(project["name"], set())
    assert not missing, f"{project['name']} imports {sorted(missing)} without declaring them in pyproject.toml"


def test_every_member_builds_a_complete_wheel(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            *map(str, MEMBERS),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for member in MEMBERS:
        project = _project(member)
        (wheel,) = tmp_path.glob(f"{project['name'].replace('-', '_')}-{project['version']}-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            info = next(n for n in names if n.endswith(".dist-info/METADATA")).rsplit("/", 1)[0]
            metadata = email.message_from_string(zf.read(f"{info}/METADATA").decode())
            assert metadata["Name"] == project["name"]
            requires = metadata.get_all("Requires-Dist") or []
            assert _requirement_names([r for r in requires if "extra ==" not in r]) == _requirement_names(
                project.get("dependencies", [])
            )
            extras = project.get("optional-dependencies", {})
            assert set(metadata.get_all("Provides-Extra") or []) == set(extras)
            assert _requirement_names([r for r in requires if "extra ==" in r]) == _requirement_names(
                [r for reqs in extras.values() for r in reqs]
            )
            assert len(metadata.get_payload()) > 200, f"{project['name']}: the README is not the long description"
            assert any(n.endswith("/py.typed") for n in names), f"{project['name']}: no py.typed"
            plugin = project.get("entry-points", {}).get("segcore")
            if plugin:
                entry_points = zf.read(f"{info}/entry_points.txt").decode()
                for name, target in plugin.items():
                    assert f"{name} = {target}" in entry_points
                    assert f"{target.replace('.', '/')}.py" in names
