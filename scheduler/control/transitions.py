"""Pure steps of the live controller: (records, input, now) → (changed records, history, effects).

Nothing here touches the store or Ray. The controller commits what these return in one
transaction and only then carries out the effects, so a crash between the two leaves a plan that
start-up reconciliation can finish (see reconcile.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from scheduler.backends.base import BackendEvent, EventKind
from scheduler.model.cluster import ANY, Node, PoolKey
from scheduler.model.job import Job, JobState
from scheduler.model.plan import Allocation, Place, Plan, Preempt, Reject
from scheduler.model.records import AuditRecord, Cordon, EventRecord, JobRecord, StopReason, UsageRecord
from scheduler.model.snapshot import RunningJob
from scheduler.policy import explain

_HOLDING = frozenset({JobState.STARTING, JobState.RUNNING, JobState.PREEMPTING})

# A start that fails for a transient reason (Ray could not place the group in time, an actor died
# while starting) is retried after 5, 10 and 20 s; the fourth failure in a row fails the job. A
# command that cannot run at all (not found: 127, not executable: 126) is not transient: the rank
# exits with that code and the job fails at once.
MAX_START_RETRIES = 3
START_BACKOFF_S = 5.0
START_FAILED_CODE = "StartFailed"  # the pending reason of a job waiting to retry its start


@dataclass(frozen=True, slots=True)
class Start:
    job: Job
    allocation: Allocation


@dataclass(frozen=True, slots=True)
class Stop:
    job: Job
    grace_s: float


@dataclass(frozen=True, slots=True)
class Release:
    """Free what an exited attempt still holds in the backend, once its end is committed."""

    job_id: str
    attempt: int


Effect = Start | Stop | Release


@dataclass(slots=True)
class Step:
    """What one controller step changes: records to write, history, audit and effects to run after."""

    records: dict[str, JobRecord] = field(default_factory=dict)
    events: list[EventRecord] = field(default_factory=list)
    audit: list[AuditRecord] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    pending_reasons: dict[str, str | None] = field(default_factory=dict)
    usage: list[UsageRecord] = field(default_factory=list)
    cordons: list[Cordon] = field(default_factory=list)
    # Failed starts in a row per node as this step leaves them (0: a start there succeeded); kept
    # by the controller only once the step is committed, so a failed step counts nothing twice.
    node_failures: dict[str, int] = field(default_factory=dict)
    failed_starts: list[str] = field(default_factory=list)  # queues of the starts that failed

    def put(self, rec: JobRecord) -> None:
        self.records[rec.id] = rec

    def note(self, rec: JobRecord, kind: str, now: float, message: str = "", node: str = "") -> None:
        self.events.append(EventRecord(rec.id, now, kind, message, rec.job.restart_count, node))

    def __bool__(self) -> bool:
        return bool(
            self.records
            or self.events
            or self.audit
            or self.effects
            or self.pending_reasons
            or self.usage
            or self.cordons
        )


def holds_gpus(rec: JobRecord) -> bool:
    return rec.state in _HOLDING and rec.allocation is not None


def _released(rec: JobRecord, now: float) -> Job:
    """The job with this attempt's GPU-time added to what it attained (for LAS and fair share)."""
    job = rec.job
    alloc = rec.allocation
    if alloc is None or job.started_at is None:
        return job
    used = alloc.gpus * max(0.0, now - job.started_at)
    return job.model_copy(update={"attained_gpu_s": job.attained_gpu_s + used})


def in_backoff(rec: JobRecord, now: float) -> bool:
    """A pending job waiting to retry a failed start: decide() does not see it until then."""
    return rec.state is JobState.PENDING and rec.retry_at is not None and rec.retry_at > now


def _requeued(rec: JobRecord, now: float, preempted: bool) -> JobRecord:
    job = _released(rec, now).transition(
        JobState.PENDING,
        restart_count=rec.job.restart_count + 1,
        preemption_count=rec.job.preemption_count + (1 if preempted else 0),
    )
    return replace(
        rec,
        job=job,
        allocation=None,
        stop_reason=None,
        stop_requested_at=None,
        pending_reason="WaitingForScheduling",
        updated_at=now,
    )


def _finished(rec: JobRecord, now: float, state: JobState, exit_code: int | None = None) -> JobRecord:
    job = _released(rec, now)
    if state is JobState.SUCCEEDED and job.state is JobState.STARTING:
        job = job.transition(JobState.RUNNING)  # it ran, even if its STARTED was not seen
    job = job.transition(state, finished_at=now, exit_code=exit_code)
    return replace(rec, job=job, allocation=None, pending_reason=None, updated_at=now)


def requeue(rec: JobRecord, now: float, step: Step, why: str, preempted: bool = False) -> None:
    """The attempt is gone and the job waits again, with its identity, history and restart count."""
    step.put(_requeued(rec, now, preempted))
    step.note(rec, "REQUEUED", now, why)
    step.audit.append(_audit(rec, "requeue", now, why))


def _start_failed(rec: JobRecord, cause: str, now: float, step: Step) -> None:
    """A transient start failure: retry after an exponential backoff, or fail past the retries."""
    failures = rec.start_failures + 1
    cause = cause or "the start did not complete"
    if failures > MAX_START_RETRIES:
        new = _finished(rec, now, JobState.FAILED)
        step.put(replace(new, start_failures=failures, retry_at=None, pending_reason=None))
        step.note(rec, "FAILED", now, f"the start failed {failures} times in a row; last: {cause}")
        return
    delay = START_BACKOFF_S * 2 ** (failures - 1)
    retry = f"retry {failures} of {MAX_START_RETRIES} in {delay:.0f} s"
    new = _requeued(rec, now, preempted=False)
    step.put(
        replace(
            new,
            start_failures=failures,
            retry_at=now + delay,
            pending_reason=f"{START_FAILED_CODE}: {cause}; {retry}",
        )
    )
    step.note(rec, "REQUEUED", now, f"the start failed ({cause}): {retry}")
    step.audit.append(_audit(rec, "requeue", now, f"start failed: {cause}"))


def _audit(rec: JobRecord, decision: str, now: float, why: str) -> AuditRecord:
    """An audit record of what became of the job's current attempt, on the nodes it held (their
    regions are filled in by the controller: with_node_regions)."""
    nodes = rec.allocation.node_ids if rec.allocation is not None else ()
    return AuditRecord(
        now,
        rec.id,
        decision,
        rec.job.restart_count,
        nodes=nodes,
        data_region=rec.job.spec.data_region,
        detail=why,
    )


def with_node_regions(entry: AuditRecord, nodes: Mapping[str, Node]) -> AuditRecord:
    """The entry with the regions of its nodes, when it names nodes but not yet their regions."""
    if not entry.nodes or entry.node_regions:
        return entry
    return replace(entry, node_regions=tuple(nodes[n].region if n in nodes else "?" for n in entry.nodes))


def end_of_attempt(
    rec: JobRecord, kind: EventKind, exit_code: int | None, now: float, step: Step, message: str = ""
) -> None:
    """The attempt's processes are gone (exited, stopped or never started): free its GPUs and decide
    what becomes of the job. A requested stop wins over the exit code: a preempted job that saved its
    checkpoint and exited 0 is requeued, not finished. `message` is the backend's why, if any."""
    reason = rec.stop_reason
    if kind is EventKind.EXITED:
        step.effects.append(Release(rec.id, rec.job.restart_count))
    if reason is StopReason.PREEMPT:
        requeue(rec, now, step, "preempted: requeued, resumes from its checkpoint", preempted=True)
        return
    if reason is StopReason.NODE_FAIL:
        requeue(rec, now, step, "a node of the job failed: requeued")
        return
    if reason is StopReason.REGION_CHANGE:
        requeue(rec, now, step, "a node of the job left its data region: requeued")
        return
    if reason is None and kind is EventKind.START_FAILED:
        _start_failed(rec, message, now, step)
        return
    if reason is None and kind is EventKind.START_INTERRUPTED:
        requeue(rec, now, step, f"{message or 'the start was interrupted'}: requeued (not a failed start)")
        return
    if reason is StopReason.CANCEL:
        new = _finished(rec, now, JobState.CANCELLED, exit_code)
        step.note(rec, "CANCELLED", now, "cancelled by request")
        step.audit.append(_audit(rec, "cancel", now, "cancelled by request: stopped"))
    elif reason is StopReason.TIMEOUT:
        new = _finished(rec, now, JobState.TIMEOUT, exit_code)
        step.note(rec, "TIMEOUT", now, f"time limit of {rec.job.spec.time_limit_s:g} s reached")
        step.audit.append(
            _audit(rec, "timeout", now, f"time limit of {rec.job.spec.time_limit_s:g} s reached")
        )
    elif exit_code == 0:
        new = _finished(rec, now, JobState.SUCCEEDED, 0)
        step.note(rec, "SUCCEEDED", now, "exit code 0")
    else:
        new = _finished(rec, now, JobState.FAILED, exit_code)
        step.note(rec, "FAILED", now, f"exit code {exit_code}" + (f": {message}" if message else ""))
    step.put(new)


ENDS_OF_ATTEMPT = frozenset(
    {
        EventKind.EXITED,
        EventKind.STOPPED,
        EventKind.START_FAILED,
        EventKind.START_INTERRUPTED,
        EventKind.TIMED_OUT,
    }
)


def on_backend_event(records: Mapping[str, JobRecord], event: BackendEvent, now: float, step: Step) -> None:
    """Apply one job event from the backend; events of an older attempt are stale and ignored."""
    rec = step.records.get(event.job_id) or records.get(event.job_id)
    if rec is None or rec.job.restart_count != event.attempt or not holds_gpus(rec):
        return
    if event.kind is EventKind.STARTED:
        if rec.state is JobState.STARTING:
            running = rec.job.transition(JobState.RUNNING)
            step.put(replace(rec, job=running, start_failures=0, retry_at=None, updated_at=now))
            step.note(
                rec, "STARTED", now, "on " + ", ".join(rec.allocation.node_ids if rec.allocation else ())
            )
    elif event.kind in ENDS_OF_ATTEMPT:
        end_of_attempt(rec, event.kind, event.exit_code, now, step, event.message)
    elif event.kind is EventKind.NODE_LOST and rec.stop_reason is None:
        # One rank's node died: stop the other ranks at once, then requeue (a gang is all or nothing).
        step.put(replace(rec, stop_reason=StopReason.NODE_FAIL, stop_requested_at=now, updated_at=now))
        step.note(rec, "NODE_FAIL", now, f"node {event.node} failed", node=event.node)
        step.effects.append(Stop(rec.job, 0.0))


def stop_grace(rec: JobRecord) -> float:
    """The grace period of the stop under way: none after a node failure or a node's change of
    region (the job's data must not stay outside its region), the cancel's if given."""
    if rec.stop_reason in (StopReason.NODE_FAIL, StopReason.REGION_CHANGE):
        return 0.0
    if rec.stop_reason is StopReason.CANCEL and rec.cancel_grace_s is not None:
        return rec.cancel_grace_s
    return rec.job.spec.grace_period_s


def request_stop(rec: JobRecord, reason: StopReason, grace_s: float, now: float, step: Step) -> None:
    """Ask a job holding GPUs to stop for `reason`; the stop's end decides its final state."""
    job = rec.job
    if reason is StopReason.PREEMPT:
        job = job.transition(JobState.PREEMPTING)
    step.put(replace(rec, job=job, stop_reason=reason, stop_requested_at=now, updated_at=now))
    step.effects.append(Stop(job, grace_s))


def on_cancel_request(rec: JobRecord, now: float, step: Step) -> None:
    """Carry out a cancel the API recorded: at once if pending, after a graceful stop if running."""
    if rec.state.terminal or rec.stop_reason is StopReason.CANCEL:
        return
    if rec.state is JobState.PENDING:
        new = replace(
            rec,
            job=rec.job.transition(JobState.CANCELLED, finished_at=now),
            pending_reason=None,
            updated_at=now,
        )
        step.put(new)
        step.note(rec, "CANCELLED", now, "cancelled by request while pending")
        step.audit.append(_audit(rec, "cancel", now, "cancelled by request while pending"))
        return
    grace = rec.cancel_grace_s if rec.cancel_grace_s is not None else rec.job.spec.grace_period_s
    if rec.stop_reason is not None:
        # Already stopping (preemption, timeout, node failure): that stop ends as a cancel, and a
        # shorter grace given with the cancel shortens it (the backend keeps the earlier deadline).
        step.put(replace(rec, stop_reason=StopReason.CANCEL, updated_at=now))
        step.note(rec, "CANCELLING", now, "cancel requested while stopping")
        if rec.cancel_grace_s is not None:
            step.effects.append(Stop(rec.job, rec.cancel_grace_s))
        return
    request_stop(rec, StopReason.CANCEL, grace, now, step)
    step.note(rec, "CANCELLING", now, f"SIGTERM, then SIGKILL after {grace:g} s")


def check_time_limits(records: Iterable[JobRecord], now: float, step: Step) -> None:
    """Stop every running job past its time limit (Slurm's TIMEOUT), with its grace period."""
    for rec in records:
        limit = rec.job.spec.time_limit_s
        started = rec.job.started_at
        if (
            rec.state is JobState.RUNNING
            and rec.stop_reason is None
            and limit is not None
            and started is not None
            and now - started >= limit
        ):
            request_stop(rec, StopReason.TIMEOUT, rec.job.spec.grace_period_s, now, step)
            step.note(rec, "TIMEOUT_REACHED", now, f"ran {now - started:.0f} s of its {limit:g} s limit")


def residency_check(
    job: Job, allocation: Allocation, nodes: Mapping[str, Node]
) -> tuple[bool, tuple[str, ...]]:
    """Invariant 6, checked again at the door: every node of the allocation is in the job's region."""
    regions = tuple(nodes[n].region if n in nodes else "?" for n in allocation.node_ids)
    want = job.spec.data_region
    return (want == ANY or all(r == want for r in regions)), regions


def apply_plan(
    records: Mapping[str, JobRecord],
    plan: Plan,
    nodes: Mapping[str, Node],
    now: float,
    step: Step,
    running: Mapping[str, RunningJob] | None = None,
) -> None:
    """Turn decide()'s plan into record changes, audit entries and effects. `running`: the
    snapshot's running jobs (what a preemption loses is read from them)."""
    for decision in plan.decisions:
        rec = step.records.get(decision.job_id) or records.get(decision.job_id)
        if rec is None:
            continue
        if isinstance(decision, Place):
            _place(rec, decision, nodes, now, step)
        elif isinstance(decision, Preempt):
            if rec.state in (JobState.STARTING, JobState.RUNNING) and rec.stop_reason is None:
                victim = running.get(rec.id) if running is not None else None
                request_stop(rec, StopReason.PREEMPT, rec.job.spec.grace_period_s, now, step)
                # The victim's team reads why (the rule, the work lost), never who: the preemptor
                # (its id, its queue) goes to the private detail, which only an admin or the
                # preemptor's team may read.
                if victim is None:
                    victim = _as_running(rec, nodes, now)
                public = explain.why_preempted(decision.rule, victim, now)
                private = explain.preempted_by(decision.for_job, decision.reason)
                step.events.append(
                    EventRecord(
                        rec.id,
                        now,
                        "PREEMPTING",
                        public,
                        rec.job.restart_count,
                        private_detail=private,
                        related_job=decision.for_job,
                    )
                )
                step.audit.append(
                    AuditRecord(
                        now,
                        rec.id,
                        "preempt",
                        rec.job.restart_count,
                        nodes=rec.allocation.node_ids if rec.allocation else (),
                        data_region=rec.job.spec.data_region,
                        detail=public,
                        private_detail=private,
                        related_job=decision.for_job,
                    )
                )
        elif isinstance(decision, Reject) and rec.state is JobState.PENDING:
            reject(rec, decision.reason, now, step)
    for job_id, rec in records.items():
        if rec.state is not JobState.PENDING or job_id in step.records or in_backoff(rec, now):
            continue
        reason = plan.reason_for(job_id, rec.job.array_id).message
        if reason != rec.pending_reason:
            step.pending_reasons[job_id] = reason


def _as_running(rec: JobRecord, nodes: Mapping[str, Node], now: float) -> RunningJob:
    """A job holding GPUs as the snapshot sees it (when the caller passed no snapshot)."""
    assert rec.allocation is not None
    first = nodes.get(rec.allocation.nodes[0].node)
    pool = first.pool if first is not None else PoolKey(rec.job.spec.data_region, rec.job.spec.gpu_type)
    return RunningJob(rec.job, rec.allocation, pool, rec.job.started_at or now)


def reject(rec: JobRecord, reason: str, now: float, step: Step) -> None:
    """A pending job that can never run here fails with the reason (e.g. its region is too small)."""
    new = replace(
        rec, job=rec.job.transition(JobState.FAILED, finished_at=now), pending_reason=reason, updated_at=now
    )
    step.put(new)
    step.note(rec, "REJECTED", now, reason)
    step.audit.append(
        AuditRecord(
            now, rec.id, "reject", rec.job.restart_count, data_region=rec.job.spec.data_region, detail=reason
        )
    )


def _place(rec: JobRecord, place: Place, nodes: Mapping[str, Node], now: float, step: Step) -> None:
    if rec.state is not JobState.PENDING or rec.cancel_requested_at is not None:
        return
    ok, regions = residency_check(rec.job, place.allocation, nodes)
    audit = AuditRecord(
        now,
        rec.id,
        "place" if ok else "place-refused",
        rec.job.restart_count,
        nodes=place.allocation.node_ids,
        node_regions=regions,
        data_region=rec.job.spec.data_region,
        residency_ok=ok,
        detail=place.residency or place.reason,
    )
    step.audit.append(audit)
    if not ok:  # never reached while decide() is right; refusing keeps invariant 6 if it is not
        step.note(rec, "PLACEMENT_REFUSED", now, f"nodes in {regions} outside data region")
        return
    job = rec.job.transition(
        JobState.STARTING, started_at=now, first_started_at=rec.job.first_started_at or now
    )
    step.put(replace(rec, job=job, allocation=place.allocation, pending_reason=None, updated_at=now))
    where = "; ".join(f"{n.node}:{','.join(map(str, n.gpus))}" for n in place.allocation.nodes)
    extra = " (backfilled)" if place.backfilled else ""
    extra += f" (borrows {place.borrowed_gpus} GPUs)" if place.borrowed_gpus else ""
    step.note(rec, "PLACED", now, f"{where}{extra}")
    step.effects.append(Start(job, place.allocation))
