"""Fixtures for the deploy artifacts' tests: the repository root and promtool (Prometheus' own
checker). promtool is required, not optional: CI installs it with .ci/prometheus.sh, and a missing
one fails these tests rather than skipping them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "corral-rules.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "corral-rules.test.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "corral-overview.json"
GENERATOR = ROOT / "deploy" / "grafana" / "build_dashboard.py"


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH: install it with `bash .ci/prometheus.sh`")
    return path


def run_promtool(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
