"""The opt-in compiled build (CORRAL_COMPILE=1, setup.py): which decision modules run compiled.

CI runs the decision suites a second time against a compiled install with
CORRAL_EXPECT_COMPILED=1, so a build that silently fell back to source fails here.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from scheduler.compiled import COMPILED_MODULES, build_name, compiled_modules

EXPECT_COMPILED = os.environ.get("CORRAL_EXPECT_COMPILED") == "1"
ROOT = Path(__file__).resolve().parents[2]  # the checkout: setup.py and the listed sources


def test_every_listed_module_runs_compiled_or_none_does() -> None:
    done = compiled_modules()
    if EXPECT_COMPILED:
        assert done == list(COMPILED_MODULES)
        assert build_name() == "compiled with mypyc"
    else:
        assert done == []
        assert build_name() == "interpreted"


def test_the_listed_modules_exist_and_are_the_ones_setup_py_compiles() -> None:
    # setup.py reads the list from source without importing the package: it must parse.
    spec = importlib.util.spec_from_file_location("corral_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    build_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_script)  # setup() itself runs only as __main__
    assert build_script.listed_modules() == list(COMPILED_MODULES)
    assert all((ROOT / (name.replace(".", "/") + ".py")).is_file() for name in COMPILED_MODULES)


def test_corral_version_says_how_the_decision_code_runs(tmp_path: Path) -> None:
    # Run outside the checkout: `-m` puts the working directory first on the path.
    out = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "version"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert out.strip().endswith(f"decision code {build_name()}"), out
