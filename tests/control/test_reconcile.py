"""Start-up reconciliation of the store against what Ray runs (exact by deterministic names)."""

from __future__ import annotations

from dataclasses import replace

from scheduler.control.reconcile import reconcile
from scheduler.control.transitions import Start, Stop
from scheduler.model.job import Job, JobSpec, JobState
from scheduler.model.plan import Allocation, NodeAllocation
from scheduler.model.records import JobRecord, StopReason

ALLOC = Allocation(nodes=(NodeAllocation(node="n1", gpus=(0,)),))


def _rec(job_id: str, state: JobState, restart: int = 0) -> JobRecord:
    job = Job(
        id=job_id, spec=JobSpec(grace_period_s=30), state=state, restart_count=restart, started_at=100.0
    )
    holding = state in (JobState.STARTING, JobState.RUNNING, JobState.PREEMPTING)
    return JobRecord(job=job, allocation=ALLOC if holding else None)


def test_running_attempts_are_adopted_not_restarted() -> None:
    out = reconcile([_rec("1", JobState.RUNNING, restart=2)], [("1", 2)], 200.0)
    assert [r.id for r in out.adopt] == ["1"] and not out.step.effects and not out.orphans


def test_a_committed_start_that_never_reached_ray_is_issued_again_under_the_same_attempt() -> None:
    rec = _rec("2", JobState.STARTING, restart=1)
    out = reconcile([rec], [], 200.0)
    assert out.step.effects == [Start(rec.job, ALLOC)] and not out.step.records


def test_vanished_running_work_is_requeued() -> None:
    out = reconcile([_rec("3", JobState.RUNNING)], [], 200.0)
    new = out.step.records["3"]
    assert new.state is JobState.PENDING and new.job.restart_count == 1 and new.allocation is None
    assert {e.kind for e in out.step.events} >= {"LOST", "REQUEUED"}


def test_a_stop_under_way_continues_with_the_grace_left() -> None:
    rec = replace(_rec("4", JobState.PREEMPTING), stop_reason=StopReason.PREEMPT, stop_requested_at=190.0)
    out = reconcile([rec], [("4", 0)], 200.0)
    assert out.adopt == [rec] and out.step.effects == [Stop(rec.job, 20.0)]


def test_a_vanished_cancel_finishes_as_cancelled() -> None:
    rec = replace(_rec("5", JobState.RUNNING), stop_reason=StopReason.CANCEL, stop_requested_at=190.0)
    assert reconcile([rec], [], 200.0).step.records["5"].state is JobState.CANCELLED


def test_orphans_are_old_attempts_and_unknown_jobs() -> None:
    out = reconcile(
        [_rec("6", JobState.RUNNING, restart=1), _rec("7", JobState.PENDING)],
        [("6", 0), ("6", 1), ("7", 0), ("99", 3)],
        200.0,
    )
    assert out.orphans == [("6", 0), ("7", 0), ("99", 3)]
    assert [r.id for r in out.adopt] == ["6"]
