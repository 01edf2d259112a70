"""The chaos suite's CI runs: which faults each store gets (every kind once, split over the two
stores, each with a store outage and a leader fault), and the test body (tests/chaos/test_chaos.py
runs it once per store, one store after the other)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.chaos.harness import ChaosRun

# The soak (README, Reliability; python -m tests.chaos --soak MINUTES --seed S) draws every kind at
# random for as long as asked; CI injects these, each once, in this order (1.5–3 minutes a store).
PLANNED = {
    "postgresql": [
        "kill9_leader",
        "crash_after_commit",
        "crash_mid_preemption",
        "store_outage",
        "node_death",
    ],
    "sqlite": [
        "crash_after_placement_group",
        "sigstop_leader",
        "two_nodes_death",
        "store_outage",
        "duplicate_submissions",
        "burst",
    ],
}


def run_planned_faults(
    home: Path, store: str, seed: int, record_property: Callable[[str, object], None]
) -> None:
    run = ChaosRun(home, seed, store=store, burst=500)
    try:
        run.start()
        counts = run.run(0.0, PLANNED[store])  # the planned kinds, however long they take
    finally:
        run.close()
    report = {"store": store, "seed": seed, **counts.as_dict()}
    record_property("chaos_counts", json.dumps(report))  # printed at the end of the run (conftest)
    assert counts.accepted > 0 and set(counts.faults) == set(PLANNED[store]), report
    assert counts.clean, report
