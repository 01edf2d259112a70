"""The job lifecycle table and JobSpec validation."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from scheduler.model.job import IllegalTransition, Job, JobSpec, JobState, check_transition

S = JobState
# The lifecycle of DESIGN.md §2, written out independently of the implementation.
LEGAL: dict[JobState, set[JobState]] = {
    S.PENDING: {S.STARTING, S.CANCELLED, S.FAILED},  # FAILED: rejected before it ever ran
    S.STARTING: {S.RUNNING, S.PENDING, S.PREEMPTING, S.FAILED, S.CANCELLED},
    S.RUNNING: {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMEOUT, S.PREEMPTING, S.PENDING},  # PENDING: node lost
    S.PREEMPTING: {S.PENDING, S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMEOUT},
    S.SUCCEEDED: set(),
    S.FAILED: set(),
    S.CANCELLED: set(),
    S.TIMEOUT: set(),
}
PAIRS = list(itertools.product(JobState, JobState))


@pytest.mark.parametrize(("current", "new"), PAIRS, ids=[f"{a.value}->{b.value}" for a, b in PAIRS])
def test_transition_table(current: JobState, new: JobState) -> None:
    if new in LEGAL[current]:
        check_transition(current, new)
    else:
        with pytest.raises(IllegalTransition, match=f"from {current.value} to {new.value}"):
            check_transition(current, new)


def test_terminal_states() -> None:
    assert {s for s in JobState if s.terminal} == {S.SUCCEEDED, S.FAILED, S.CANCELLED, S.TIMEOUT}
    assert all(not LEGAL[s] for s in JobState if s.terminal)


def test_preemption_round_trip_keeps_identity() -> None:
    job = Job(id="j", spec=JobSpec(gpus_per_node=8), submitted_at=5.0)
    started = job.transition(S.STARTING, started_at=10.0).transition(S.RUNNING)
    leaving = started.transition(S.PREEMPTING)
    back = leaving.transition(S.PENDING, restart_count=1, preemption_count=1)
    assert (back.id, back.spec, back.submitted_at) == (job.id, job.spec, job.submitted_at)
    assert (back.state, back.restart_count, back.preemption_count) == (S.PENDING, 1, 1)
    assert job.state is S.PENDING and job.restart_count == 0  # the original is unchanged (frozen copy)


def test_illegal_transition_on_a_job_raises_and_changes_nothing() -> None:
    done = Job(id="j", spec=JobSpec()).transition(S.STARTING).transition(S.RUNNING).transition(S.SUCCEEDED)
    with pytest.raises(IllegalTransition):
        done.transition(S.RUNNING)
    with pytest.raises(IllegalTransition):
        Job(id="k", spec=JobSpec()).transition(S.RUNNING)  # must go through STARTING
    assert done.state is S.SUCCEEDED


def test_job_is_frozen() -> None:
    job = Job(id="j", spec=JobSpec())
    with pytest.raises(ValidationError):
        job.state = S.RUNNING  # type: ignore[misc]


# --- JobSpec validation -------------------------------------------------------------------------------------
def error_locs(**fields: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as info:
        JobSpec(**fields)
    return [(tuple(e["loc"]), e["type"]) for e in info.value.errors()]


def test_zero_gpus_is_refused_naming_the_field() -> None:
    assert error_locs(gpus_per_node=0) == [(("gpus_per_node",), "greater_than_equal")]


def test_ten_thousand_nodes_is_refused_naming_the_field() -> None:
    assert error_locs(nodes=10_000) == [(("nodes",), "less_than_equal")]


def test_unknown_field_is_refused_naming_it() -> None:
    assert error_locs(gpus=8) == [(("gpus",), "extra_forbidden")]


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"nodes": 0}, "nodes"),
        ({"gpus_per_node": 65}, "gpus_per_node"),
        ({"time_limit_s": 0}, "time_limit_s"),
        ({"min_runtime_s": -1}, "min_runtime_s"),
        ({"grace_period_s": 7200}, "grace_period_s"),
        ({"name": ""}, "name"),
        ({"queue": "q" * 65}, "queue"),
        ({"data_region": ""}, "data_region"),
    ],
)
def test_other_limits(fields: dict[str, Any], loc: str) -> None:
    assert [where for where, _ in error_locs(**fields)] == [(loc,)]


def test_spec_defaults_and_helpers() -> None:
    spec = JobSpec(nodes=2, gpus_per_node=8, command="python train.py")
    assert spec.gpus == 16
    assert spec.command == ["/bin/sh", "-c", "python train.py"]
    assert (spec.gpu_type, spec.data_region, spec.preemptible) == ("any", "any", True)
    assert JobSpec(command=["a", "b"]).command == ["a", "b"]
