"""Print each chaos run's counts in the test report (also when it passes)."""

from __future__ import annotations

import json
from typing import Any

import pytest

REPORTS: list[dict[str, Any]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for report in REPORTS:
        terminalreporter.write_sep("-", f"chaos counts ({report['store']}, seed {report['seed']})")
        terminalreporter.write_line(json.dumps(report, sort_keys=False))


@pytest.fixture
def chaos_report() -> list[dict[str, Any]]:
    return REPORTS
