"""The opt-in compiled build: `CORRAL_COMPILE=1 pip install .` compiles the decision modules that
scheduler/compiled.py lists with mypyc: faster cycles and replays, the same decisions (README,
Benchmarks, "The compiled build").

Without CORRAL_COMPILE=1 this adds nothing to pyproject.toml: a pure-Python package. The compiled
build is for regular installs only; in an editable install a compiled module would go on running
after its source was edited.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
COMPILE = os.environ.get("CORRAL_COMPILE", "") == "1"
# Asked only for metadata (egg_info, dist_info): nothing to compile yet.
METADATA_ONLY = any(command in sys.argv for command in ("egg_info", "dist_info"))
# What mypyc needs beside it to type-check the modules as `mypy` does here (the pydantic plugin).
# mypy is pinned: the compiled code is what this version of mypyc generates.
COMPILE_REQUIRES = ["mypy==2.4.1", "pydantic>=2.6", "pydantic-settings>=2.2", "types-PyYAML"]


def listed_modules() -> list[str]:
    """COMPILED_MODULES from scheduler/compiled.py, read without importing the package."""
    tree = ast.parse((HERE / "scheduler" / "compiled.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "COMPILED_MODULES":
            return list(ast.literal_eval(node.value))  # type: ignore[arg-type]
    raise SystemExit("setup.py: scheduler/compiled.py has no COMPILED_MODULES")


def compiled_extensions() -> list[Any]:
    if not COMPILE or METADATA_ONLY:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # the front end is asking what the build needs: setup_requires says
        return []
    paths = [name.replace(".", "/") + ".py" for name in listed_modules()]
    # The build environment holds only COMPILE_REQUIRES, not every dependency: modules the listed
    # ones import are read for their types but not checked, and a missing library reads as Any.
    options = ["--follow-imports=silent", "--ignore-missing-imports"]
    return list(mypycify([*options, *paths], opt_level="3", group_name="corral_scheduler"))


class BuildPy(build_py):
    def run(self) -> None:
        if COMPILE and not self.distribution.ext_modules:
            raise SystemExit(
                "CORRAL_COMPILE=1: mypyc is not importable in the build environment; "
                f"install {' '.join(COMPILE_REQUIRES)} or build with build isolation (plain `pip install .`)"
            )
        super().run()


NOT_EDITABLE = (
    "CORRAL_COMPILE=1 is for a regular install (`CORRAL_COMPILE=1 pip install .`): in an "
    "editable or in-place build a compiled module would shadow later edits to its source"
)


class BuildExt(build_ext):
    def finalize_options(self) -> None:
        super().finalize_options()
        if COMPILE and (self.inplace or getattr(self, "editable_mode", False)):
            raise SystemExit(NOT_EDITABLE)


if __name__ == "__main__":  # as pip's build backend runs it; tests import listed_modules()
    if COMPILE and "editable_wheel" in sys.argv:
        raise SystemExit(NOT_EDITABLE)
    setup(
        ext_modules=compiled_extensions(),
        setup_requires=COMPILE_REQUIRES if COMPILE else [],
        cmdclass={"build_py": BuildPy, "build_ext": BuildExt},
    )
