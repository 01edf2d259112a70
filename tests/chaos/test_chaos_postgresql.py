"""The chaos suite in CI on PostgreSQL: its planned faults (tests/chaos/plan.py) with a fixed seed
while a workload runs; every invariant holds after each and at the end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.plan import run_planned_faults

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]


def test_invariants_hold_under_a_stream_of_faults_on_postgresql(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    run_planned_faults(tmp_path / "home", "postgresql", 11, record_property)
