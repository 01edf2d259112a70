"""The chaos suite in CI: each store gets its planned faults (tests/chaos/plan.py) with a fixed seed
while a workload runs; every invariant holds after each and at the end.

Both stores in one module, so that `--dist loadfile` runs them one after the other on one worker:
run side by side, two installs of two controllers and a Ray cluster each started at once on CI's
two cores, and a loaded run saw raylets miss Ray's fixed 30 s start-up deadline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.plan import run_planned_faults

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]


@pytest.mark.parametrize(("store", "seed"), [("postgresql", 11), ("sqlite", 12)])
def test_invariants_hold_under_a_stream_of_faults(
    store: str, seed: int, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    run_planned_faults(tmp_path / "home", store, seed, record_property)
