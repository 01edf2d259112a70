"""The controller's pure steps: plan → records, backend events → records, cancels, time limits."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.backends.base import BackendEvent, EventKind
from scheduler.control.transitions import (
    Start,
    Step,
    Stop,
    apply_plan,
    check_time_limits,
    holds_gpus,
    on_backend_event,
    on_cancel_request,
)
from scheduler.model.cluster import Node
from scheduler.model.job import Job, JobSpec, JobState
from scheduler.model.plan import Allocation, NodeAllocation, Place, Plan, Preempt
from scheduler.model.records import JobRecord, StopReason

NODES = {
    "n1": Node(id="n1", region="cn-north", rack="r1", gpu_type="H100"),
    "n2": Node(id="n2", region="cn-east", rack="r2", gpu_type="H100"),
}
ALLOC = Allocation(nodes=(NodeAllocation(node="n1", gpus=(0, 1)),))


def _rec(state: JobState = JobState.PENDING, **spec: object) -> JobRecord:
    job = Job(id="7", spec=JobSpec(gpus_per_node=2, **spec), team="a", state=state, submitted_at=0.0)  # type: ignore[arg-type]
    if state is not JobState.PENDING:
        job = job.model_copy(update={"started_at": 10.0, "first_started_at": 10.0})
        return JobRecord(job=job, allocation=ALLOC)
    return JobRecord(job=job, pending_reason="WaitingForScheduling")


def _place(rec: JobRecord, alloc: Allocation = ALLOC) -> Step:
    step = Step()
    plan = Plan(decisions=(Place(job_id=rec.id, allocation=alloc),))
    apply_plan({rec.id: rec}, plan, NODES, 10.0, step)
    return step


def _event(
    rec: JobRecord, kind: EventKind, t: float, code: int | None = None, attempt: int | None = None
) -> Step:
    step = Step()
    attempt = rec.job.restart_count if attempt is None else attempt
    on_backend_event({rec.id: rec}, BackendEvent(kind, t, rec.id, attempt, code, "n1"), t, step)
    return step


def test_place_starts_the_job_after_an_audited_residency_check() -> None:
    step = _place(_rec(data_region="cn-north"))
    new = step.records["7"]
    assert new.state is JobState.STARTING and new.allocation == ALLOC and new.pending_reason is None
    assert step.effects == [Start(new.job, ALLOC)]
    assert step.audit[0].decision == "place" and step.audit[0].residency_ok
    assert step.audit[0].node_regions == ("cn-north",)


def test_a_placement_outside_the_data_region_is_refused_at_the_door() -> None:
    east = Allocation(nodes=(NodeAllocation(node="n2", gpus=(0, 1)),))
    step = _place(_rec(data_region="cn-north"), east)
    assert "7" not in step.records and not step.effects
    assert step.audit[0].decision == "place-refused" and not step.audit[0].residency_ok


def test_preemption_stops_with_grace_then_requeues_once_keeping_identity() -> None:
    rec = _rec(JobState.RUNNING, grace_period_s=12)
    step = Step()
    apply_plan(
        {rec.id: rec}, Plan(decisions=(Preempt(job_id="7", for_job="9", reason="priority"),)), NODES, 20, step
    )
    leaving = step.records["7"]
    assert leaving.state is JobState.PREEMPTING and leaving.stop_reason is StopReason.PREEMPT
    assert step.effects == [Stop(leaving.job, 12)]
    # The job saved its checkpoint on SIGTERM and exited 0: still a requeue, not a success.
    done = _event(leaving, EventKind.EXITED, 25, code=0).records["7"]
    assert done.state is JobState.PENDING and done.allocation is None
    assert (done.job.restart_count, done.job.preemption_count) == (1, 1)
    assert done.job.attained_gpu_s == 2 * (25 - 10)
    assert done.job.id == "7" and done.job.first_started_at == 10.0
    # A late STOPPED of the old attempt changes nothing (no second requeue).
    assert not _event(done, EventKind.STOPPED, 26, attempt=0).records


def test_exit_codes_finish_the_job() -> None:
    running = _rec(JobState.RUNNING)
    assert _event(running, EventKind.EXITED, 30, code=0).records["7"].state is JobState.SUCCEEDED
    failed = _event(running, EventKind.EXITED, 30, code=3).records["7"]
    assert failed.state is JobState.FAILED and failed.job.exit_code == 3 and failed.allocation is None


def test_started_event_makes_it_running() -> None:
    starting = _rec(JobState.STARTING)
    assert _event(starting, EventKind.STARTED, 11).records["7"].state is JobState.RUNNING


def test_cancel_pending_is_immediate_and_running_is_graceful() -> None:
    step = Step()
    on_cancel_request(replace(_rec(), cancel_requested_at=5.0), 5.0, step)
    assert step.records["7"].state is JobState.CANCELLED and not step.effects
    running = replace(_rec(JobState.RUNNING), cancel_requested_at=5.0, cancel_grace_s=3.0)
    step = Step()
    on_cancel_request(running, 30.0, step)
    stopping = step.records["7"]
    assert stopping.stop_reason is StopReason.CANCEL and step.effects == [Stop(stopping.job, 3.0)]
    assert _event(stopping, EventKind.STOPPED, 32).records["7"].state is JobState.CANCELLED


def test_time_limit_stops_the_job_as_timeout() -> None:
    rec = _rec(JobState.RUNNING, time_limit_s=60)
    step = Step()
    check_time_limits([rec], 69.0, step)
    assert not step.records
    check_time_limits([rec], 70.0, step)
    assert step.records["7"].stop_reason is StopReason.TIMEOUT
    assert _event(step.records["7"], EventKind.STOPPED, 75).records["7"].state is JobState.TIMEOUT


def test_node_loss_stops_the_gang_and_requeues_without_counting_a_preemption() -> None:
    step = _event(_rec(JobState.RUNNING), EventKind.NODE_LOST, 40)
    lost = step.records["7"]
    assert lost.stop_reason is StopReason.NODE_FAIL and step.effects == [Stop(lost.job, 0.0)]
    assert [e.kind for e in step.events] == ["NODE_FAIL"]
    back = _event(lost, EventKind.STOPPED, 41).records["7"]
    assert back.state is JobState.PENDING and (back.job.restart_count, back.job.preemption_count) == (1, 0)


_EVENTS = st.sampled_from(
    ["place", "preempt", "started", "exited0", "exited1", "stopped", "start_failed", "node_lost", "cancel",
     "stale", "timeout"]
)  # fmt: skip


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(_EVENTS, max_size=30))
def test_any_event_sequence_keeps_the_lifecycle_and_counts_consistent(kinds: list[str]) -> None:
    rec = _rec(time_limit_s=100)
    requeues = 0
    now = 10.0
    for kind in kinds:
        now += 7.0
        step = Step()
        current = {rec.id: rec}
        if kind == "place":
            apply_plan(current, Plan(decisions=(Place(job_id="7", allocation=ALLOC),)), NODES, now, step)
        elif kind == "preempt":
            apply_plan(
                current, Plan(decisions=(Preempt(job_id="7", for_job="9", reason="p"),)), NODES, now, step
            )
        elif kind == "cancel":
            on_cancel_request(replace(rec, cancel_requested_at=now), now, step)
        elif kind == "timeout":
            check_time_limits([rec], now + 1000, step)
        else:
            ev = {
                "started": EventKind.STARTED, "exited0": EventKind.EXITED, "exited1": EventKind.EXITED,
                "stopped": EventKind.STOPPED, "start_failed": EventKind.START_FAILED,
                "node_lost": EventKind.NODE_LOST, "stale": EventKind.STOPPED,
            }[kind]  # fmt: skip
            attempt = rec.job.restart_count - 1 if kind == "stale" else rec.job.restart_count
            code = 1 if kind == "exited1" else 0
            on_backend_event(current, BackendEvent(ev, now, "7", attempt, code, "n1"), now, step)
        new = step.records.get("7", rec)
        if rec.state.terminal:
            assert new == rec  # terminal states are final
        if new.job.restart_count == rec.job.restart_count + 1:
            requeues += 1
            assert new.state is JobState.PENDING and rec.state is not JobState.PENDING
        else:
            assert new.job.restart_count == rec.job.restart_count
        assert holds_gpus(new) == (new.allocation is not None)  # GPUs held exactly while holding
        assert new.job.preemption_count <= new.job.restart_count
        rec = new
    assert rec.job.restart_count == requeues
