"""The chaos suite in CI: a few minutes of faults with fixed seeds, on PostgreSQL and on SQLite.
Longer runs: python -m tests.chaos --soak MINUTES --seed S (README, Reliability)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.harness import ChaosRun

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]

RUN_S = 60.0  # of faults per store (a few kinds each, seeded; the soak run covers every kind)


@pytest.mark.parametrize(("store", "seed"), [("postgresql", 11), ("sqlite", 12)])
def test_invariants_hold_under_a_stream_of_faults(
    tmp_path: Path, store: str, seed: int, record_property: Callable[[str, object], None]
) -> None:
    run = ChaosRun(tmp_path / "home", seed, store=store, burst=1000)
    try:
        run.start()
        counts = run.run(RUN_S)
    finally:
        run.close()
    report = {"store": store, "seed": seed, **counts.as_dict()}
    record_property("chaos_counts", json.dumps(report))  # printed at the end of the run (conftest)
    assert counts.accepted > 0 and sum(counts.faults.values()) > 0
    assert counts.clean, report
