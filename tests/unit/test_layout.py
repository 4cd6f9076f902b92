"""The layout stays what docs/architecture.md says: packages by concern, a code map true to
the tree, and lower layers that import nothing from higher ones."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app"
PACKAGES = sorted(p for p in APP.iterdir() if (p / "__init__.py").is_file())
TOP_MODULES = sorted(p for p in APP.glob("*.py") if p.name != "__init__.py")
#: Who may import what, by package: (the importing files, the packages they must not use).
FORBIDDEN = {
    "top-level modules": (
        [p for p in TOP_MODULES if p.name != "broker.py"],
        ("recording", "middleware", "operations", "workloads", "cli"),
    ),
    "outbox": (list((APP / "outbox").rglob("*.py")), ("recording", "middleware", "operations")),
    "recording": (list((APP / "recording").rglob("*.py")), ("middleware", "operations")),
    "middleware": (list((APP / "middleware").rglob("*.py")), ("workloads", "cli")),
    "operations": (list((APP / "operations").rglob("*.py")), ("middleware", "workloads", "cli")),
}


def _imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_app_keeps_at_most_twenty_top_level_modules() -> None:
    assert len(list(APP.glob("*.py"))) <= 20


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_every_package_says_what_it_holds(package: Path) -> None:
    docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
    assert docstring and len(docstring) > 40, f"app/{package.name}/__init__.py"


def test_the_code_map_has_one_row_per_package_and_top_level_module() -> None:
    text = (ROOT / "docs/architecture.md").read_text()
    code_map = text.split("## Code map", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([^`]+)` \|", code_map, re.M))
    expected = {f"app/{p.name}/" for p in PACKAGES} | {f"app/{p.name}" for p in TOP_MODULES}
    assert rows == expected | {"actors/", "api/"}


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_lower_layer_imports_nothing_from_a_higher_one(layer: str) -> None:
    files, higher = FORBIDDEN[layer]
    assert files
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in _imported(path)
        if any(name == f"app.{h}" or name.startswith(f"app.{h}.") for h in higher)
    }
    assert not wrong


def test_no_middleware_reads_the_environment() -> None:
    readers = [
        path.name
        for path in (APP / "middleware").glob("*.py")
        if "load_settings" in path.read_text() or "os.environ" in path.read_text()
    ]
    assert readers == []
