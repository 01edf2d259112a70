"""The package's layers, checked on the source: who may import whom, and where files and the
environment may be read (a pure policy is what lets the simulator replay it)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scheduler"

FORBIDDEN_IMPORTS = {
    "control": ("scheduler.sim", "scheduler.api", "scheduler.cli", "scheduler.serve"),
    "sim": ("scheduler.control", "scheduler.store", "scheduler.api"),
    "api": ("scheduler.control", "scheduler.sim"),
    "metrics.py": ("scheduler.control", "scheduler.sim"),
    "view.py": ("scheduler.control", "scheduler.store", "scheduler.sim", "scheduler.api"),
    "policy": ("scheduler.control", "scheduler.store", "scheduler.sim", "scheduler.api", "scheduler.config"),
    "model": ("scheduler.control", "scheduler.store", "scheduler.sim", "scheduler.api", "scheduler.policy"),
}
# Modules that read files or the environment: none of them in scheduler/policy or scheduler/model.
IO_MODULES = ("yaml", "pydantic_settings", "dotenv", "pathlib", "io", "configparser", "tomllib")
IO_CALLS = {"open", "getenv", "read_text", "read_bytes", "environ", "load_dotenv"}


def _modules(part: str) -> Iterator[Path]:
    target = PACKAGE / part
    yield from ([target] if target.is_file() else sorted(target.rglob("*.py")))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


@pytest.mark.parametrize("part", sorted(FORBIDDEN_IMPORTS))
def test_layers_import_only_downwards(part: str) -> None:
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for path in _modules(part)
        for line, name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IMPORTS[part])
    ]
    assert not wrong, wrong


@pytest.mark.parametrize("part", ["policy", "model"])
def test_policy_and_model_read_no_files_and_no_environment(part: str) -> None:
    wrong = []
    for path in _modules(part):
        tree = ast.parse(path.read_text(), str(path))
        for line, name in _imports(path):
            if name.split(".")[0] in IO_MODULES or name == "os":
                wrong.append(f"{path.name}:{line} imports {name}")
        for node in ast.walk(tree):
            name = (
                node.attr
                if isinstance(node, ast.Attribute)
                else node.id
                if isinstance(node, ast.Name)
                else ""
            )
            if name in IO_CALLS:
                wrong.append(f"{path.name}:{node.lineno} uses {name}")
    assert not wrong, wrong


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    """The scanner itself finds an import and an environment read (so the checks above can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom scheduler.control.controller import Controller\nx = os.environ['A']\n")
    assert [n for _, n in _imports(bad)] == ["os", "scheduler.control.controller"]
    tree = ast.parse(bad.read_text())
    assert any(isinstance(n, ast.Attribute) and n.attr == "environ" for n in ast.walk(tree))
