"""Speed work changes no decision: fixed contended replays match their recorded schedules.

The cases and how to re-record the references (only for a change of decisions made on purpose)
are in tests/sim/equivalence.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.policy.config import POLICY_NAMES
from tests.sim.equivalence import (
    CASES,
    UNOBSERVED_PARTS,
    Case,
    read_reference,
    reference_path,
    schedule,
    unobserved_schedule,
)


@pytest.mark.parametrize("policy", POLICY_NAMES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_schedule_matches_the_recorded_reference(case: Case, policy: str) -> None:
    assert reference_path(case, policy).exists(), "no reference: python -m tests.sim.equivalence"
    expected = read_reference(case, policy)
    actual = schedule(case, policy)
    for part in ("decisions", "spans", "jobs", "rejected", "preemptions", "reasons_sha256"):
        assert actual[part] == expected[part], _first_difference(part, actual[part], expected[part])


@pytest.mark.parametrize("policy", POLICY_NAMES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_replay_nobody_observes_schedules_what_the_reference_recorded(case: Case, policy: str) -> None:
    """Without an observer the cycles skip what only explanations need (the group walk, the
    settled stop): the schedule must still be the recorded one, span for span."""
    expected = read_reference(case, policy)
    actual = unobserved_schedule(case, policy)
    for part in UNOBSERVED_PARTS:
        assert actual[part] == expected[part], _first_difference(part, actual[part], expected[part])


def _first_difference(part: str, actual: Any, expected: Any) -> str:
    if not isinstance(actual, list) or not isinstance(expected, list):
        return f"{part}: {actual!r} != recorded {expected!r}"
    for i, (a, e) in enumerate(zip(actual, expected, strict=False)):
        if a != e:
            return f"{part}[{i}]: {a!r} != recorded {e!r}"
    return f"{part}: {len(actual)} entries, recorded {len(expected)}"


def test_every_case_exercises_contention() -> None:
    """The references are worth comparing: between them they preempt, reject nothing by
    accident, and every policy's replays hold many decisions."""
    for policy in POLICY_NAMES:
        total = sum(len(read_reference(c, policy)["decisions"]) for c in CASES)
        assert total > 1000, policy
    for policy in ("corral", "las"):
        assert sum(read_reference(c, policy)["preemptions"] for c in CASES) > 100, policy
