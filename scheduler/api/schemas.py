"""Response bodies of the API (one Job schema for list and get) and their builders from records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from scheduler.api.auth import Principal
from scheduler.model.job import MAX_GPUS_PER_NODE, MAX_NODES_PER_JOB, NAME_PATTERN, JobSpec, JobState
from scheduler.model.plan import Allocation
from scheduler.model.records import AuditRecord, EventRecord, JobRecord
from scheduler.policy.suggest import Suggestion
from scheduler.store.token_store import TokenLimits, TokenRecord
from scheduler.view import DryRun, NodeStatus, QueueStatus


class ErrorOut(BaseModel):
    error: str
    field: str | None = None


class NodeAllocationOut(BaseModel):
    node: str
    gpus: list[int]


class SuggestionOut(BaseModel):
    """A change that would start a waiting job now, verified by a scheduling cycle."""

    kind: str = Field(description="shape | gpu_type | queue | time_limit")
    change: dict[str, int | float | str] = Field(description="the spec fields it changes")
    flag: str = Field(description="the `corral submit` flags that make the change")
    text: str


class JobOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    team: str
    queue: str
    priority: str
    state: JobState
    gpus: int
    nodes: int
    gpus_per_node: int
    gpu_type: str
    data_region: str
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    restart_count: int
    preemption_count: int
    exit_code: int | None
    pending_reason: str | None
    queue_position: int | None
    estimated_start: float | None = Field(
        default=None, description="pending: when it is expected to start (unix time; null: unknown)"
    )
    allocation: list[NodeAllocationOut] | None
    time_limit_s: float | None
    run_time_s: float | None
    cancel_requested: bool
    spec: JobSpec
    array_id: str | None = Field(
        default=None, description="the job array it is a task of (its first task's id)"
    )
    array_index: int | None = Field(default=None, description="its index in that array")
    suggestions: list[SuggestionOut] = Field(
        default_factory=list,
        description="for a waiting job: changes that would start it now (counterfactual reasons)",
    )


class ArrayOut(BaseModel):
    """A job array: its id (its first task's id), the expression submitted, the cap, its tasks."""

    array_id: str
    array: str
    max_running: int | None
    tasks: list[JobOut]


class EventOut(BaseModel):
    seq: int
    job_id: str
    time: float
    kind: str
    message: str
    attempt: int
    node: str
    private_detail: str = Field(
        default="", description="e.g. which job preempted this one: for an admin or that job's team only"
    )
    related_job: str = Field(default="", description="the other job concerned (same visibility)")


class AuditOut(BaseModel):
    seq: int
    time: float
    job_id: str
    decision: str
    attempt: int
    nodes: list[str]
    node_regions: list[str]
    data_region: str
    residency_ok: bool
    detail: str
    private_detail: str = ""
    related_job: str = ""
    actor: str = ""  # who: "controller", or the token that asked ("team (token 7)")


class JobDetailOut(JobOut):
    history: list[EventOut]
    audit: list[AuditOut]


class HistoryEntryOut(JobOut):
    history: list[EventOut]


class DryRunOut(BaseModel):
    dry_run: bool = True
    queue: str
    gpus: int
    allocation: list[NodeAllocationOut] | None
    pending_reason: str | None
    rejected: str | None


class QueueOut(BaseModel):
    name: str
    cohort: str | None
    quota: dict[str, int]
    borrowing_limit: int | None
    lending_limit: int | None
    weight: float
    used: dict[str, int]
    used_gpus: int
    borrowed: int
    pending: int
    running: int
    fair_share: float


class NodeOut(BaseModel):
    id: str
    region: str
    zone: str
    rack: str
    gpu_type: str
    gpus: int
    used: int
    free: int
    state: str
    labels: dict[str, str]
    jobs: list[str] = Field(description="ids of jobs on the node (a team sees only its own)")
    cordon_reason: str = Field(default="", description="why it takes no new jobs (state draining)")
    drift_gpus: int = Field(default=0, description="free GPUs by Corral's count that Ray has not had free")


class WhoAmIOut(BaseModel):
    team: str
    admin: bool
    token_id: str
    queues: list[str] | None = Field(description="queues this token may submit to (null: all)")
    max_priority: str | None
    allow_protection: bool
    max_gpus_per_job: int | None


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_s: float | None = Field(default=None, ge=0, le=3600, strict=True, allow_inf_nan=False)


Name = Annotated[StrictStr, Field(pattern=NAME_PATTERN)]


class TokenIn(BaseModel):
    """A new token: its team, and what it may submit (an admin token has no limits)."""

    model_config = ConfigDict(extra="forbid")

    team: Name
    description: StrictStr = Field(default="", max_length=256)
    admin: StrictBool = False
    queues: list[Name] | None = Field(default=None, min_length=1, max_length=256)
    max_priority: Name | None = None
    allow_protection: StrictBool = False
    max_gpus_per_job: StrictInt | None = Field(default=None, ge=1, le=MAX_NODES_PER_JOB * MAX_GPUS_PER_NODE)

    @property
    def limits(self) -> TokenLimits:
        return TokenLimits(
            queues=tuple(dict.fromkeys(self.queues)) if self.queues is not None else None,
            max_priority=self.max_priority,
            allow_protection=self.allow_protection,
            max_gpus_per_job=self.max_gpus_per_job,
        )


class TokenOut(BaseModel):
    """A token as listed: never the token itself nor its digest."""

    id: str
    prefix: str = Field(description="the token's first characters, to recognise it (not a secret)")
    description: str
    team: str
    admin: bool
    queues: list[str] | None
    max_priority: str | None
    allow_protection: bool
    max_gpus_per_job: int | None
    created_at: float
    created_by: str
    revoked_at: float | None
    active: bool


class TokenCreatedOut(TokenOut):
    token: str = Field(description="the token: shown this once, store it now")


# --- builders ------------------------------------------------------------------------------------


def allocation_out(allocation: Allocation | None) -> list[NodeAllocationOut] | None:
    if allocation is None:
        return None
    return [NodeAllocationOut(node=n.node, gpus=list(n.gpus)) for n in allocation.nodes]


_HOLDING = frozenset({JobState.STARTING, JobState.RUNNING, JobState.PREEMPTING})


def run_time(record: JobRecord, now: float) -> float | None:
    """Seconds of the current attempt while it holds GPUs, else of the last attempt (if known)."""
    job = record.job
    if job.started_at is None:
        return None
    if job.state in _HOLDING:
        return max(0.0, now - job.started_at)
    if job.finished_at is not None:
        return max(0.0, job.finished_at - job.started_at)
    return None


def job_fields(
    record: JobRecord,
    now: float,
    positions: Mapping[str, int],
    estimates: Mapping[str, float | None] | None = None,
    suggestions: Sequence[Suggestion] = (),
) -> dict[str, Any]:
    job, spec = record.job, record.job.spec
    pending = job.state is JobState.PENDING
    return {
        "id": job.id,
        "name": spec.name,
        "team": job.team,
        "queue": spec.queue,
        "priority": spec.priority,
        "state": job.state,
        "gpus": spec.gpus,
        "nodes": spec.nodes,
        "gpus_per_node": spec.gpus_per_node,
        "gpu_type": spec.gpu_type,
        "data_region": spec.data_region,
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "restart_count": job.restart_count,
        "preemption_count": job.preemption_count,
        "exit_code": job.exit_code,
        "pending_reason": record.pending_reason if job.state is JobState.PENDING else None,
        "queue_position": positions.get(job.id) if pending else None,
        "estimated_start": estimates.get(job.id) if pending and estimates else None,
        "allocation": allocation_out(record.allocation),
        "time_limit_s": spec.time_limit_s,
        "run_time_s": run_time(record, now),
        "cancel_requested": record.cancel_requested_at is not None,
        "spec": spec,
        "array_id": job.array_id,
        "array_index": job.array_index,
        "suggestions": [
            SuggestionOut(kind=x.kind, change=dict(x.change), flag=x.flag, text=x.text) for x in suggestions
        ]
        if job.state is JobState.PENDING
        else [],
    }


def job_out(
    record: JobRecord,
    now: float,
    positions: Mapping[str, int],
    estimates: Mapping[str, float | None] | None = None,
    suggestions: Sequence[Suggestion] = (),
) -> JobOut:
    return JobOut(**job_fields(record, now, positions, estimates, suggestions))


def visible_suggestions(found: Sequence[Suggestion], who: Principal) -> list[Suggestion]:
    """The suggestions the caller may act on: never a queue its token may not submit to."""
    return [x for x in found if "queue" not in x.change or who.may_submit_to(str(x.change["queue"]))]


def array_out(tasks: Sequence[JobRecord], now: float, positions: Mapping[str, int]) -> ArrayOut:
    """The array of these tasks (at least one, all of one array, in index order)."""
    head = tasks[0].job
    expression = head.spec.array or ""
    return ArrayOut(
        array_id=head.array_id or head.id,
        array=expression,
        max_running=head.array_max_running,
        tasks=[job_out(t, now, positions) for t in tasks],
    )


def event_out(e: EventRecord, private: bool) -> EventOut:
    """The event as the caller may see it: `private` is whether it may read the related job."""
    return EventOut(
        seq=e.seq,
        job_id=e.job_id,
        time=e.time,
        kind=e.kind,
        message=e.message,
        attempt=e.attempt,
        node=e.node,
        private_detail=e.private_detail if private else "",
        related_job=e.related_job if private else "",
    )


def audit_out(a: AuditRecord, private: bool) -> AuditOut:
    return AuditOut(
        seq=a.seq,
        time=a.time,
        job_id=a.job_id,
        decision=a.decision,
        attempt=a.attempt,
        nodes=list(a.nodes),
        node_regions=list(a.node_regions),
        data_region=a.data_region,
        residency_ok=a.residency_ok,
        detail=a.detail,
        private_detail=a.private_detail if private else "",
        related_job=a.related_job if private else "",
        actor=a.actor,
    )


def whoami_out(who: Principal) -> WhoAmIOut:
    return WhoAmIOut(
        team=who.team,
        admin=who.admin,
        token_id=who.token_id,
        queues=sorted(who.queues) if who.queues is not None else None,
        max_priority=who.max_priority,
        allow_protection=who.allow_protection or who.admin,
        max_gpus_per_job=who.max_gpus_per_job,
    )


def token_out(t: TokenRecord) -> TokenOut:
    return TokenOut(**_token_fields(t))


def token_created_out(t: TokenRecord, token: str) -> TokenCreatedOut:
    return TokenCreatedOut(**_token_fields(t), token=token)


def _token_fields(t: TokenRecord) -> dict[str, Any]:
    limits = t.limits
    return {
        "id": t.id,
        "prefix": t.prefix,
        "description": t.description,
        "team": t.team,
        "admin": t.admin,
        "queues": list(limits.queues) if limits.queues is not None else None,
        "max_priority": limits.max_priority,
        "allow_protection": limits.allow_protection,
        "max_gpus_per_job": limits.max_gpus_per_job,
        "created_at": t.created_at,
        "created_by": t.created_by,
        "revoked_at": t.revoked_at,
        "active": t.active,
    }


def dry_run_out(spec: JobSpec, result: DryRun) -> DryRunOut:
    return DryRunOut(
        queue=spec.queue,
        gpus=spec.gpus,
        allocation=allocation_out(result.allocation),
        pending_reason=result.pending_reason,
        rejected=result.rejected,
    )


def queue_out(status: QueueStatus) -> QueueOut:
    q = status.queue
    return QueueOut(
        name=q.name,
        cohort=q.cohort,
        quota=dict(q.quota),
        borrowing_limit=q.borrowing_limit,
        lending_limit=q.lending_limit,
        weight=q.weight,
        used=dict(status.used),
        used_gpus=sum(status.used.values()),
        borrowed=status.borrowed,
        pending=status.pending,
        running=status.running,
        fair_share=status.fair_share,
    )


def node_out(status: NodeStatus, visible_jobs: Sequence[str]) -> NodeOut:
    n = status.node
    return NodeOut(
        id=n.id,
        region=n.region,
        zone=n.zone,
        rack=n.rack,
        gpu_type=n.gpu_type,
        gpus=n.gpus,
        used=status.used_gpus,
        free=max(0, n.gpus - status.used_gpus),
        state=n.state.value,
        labels=dict(n.labels),
        jobs=list(visible_jobs),
        cordon_reason=status.cordon_reason,
        drift_gpus=status.drift_gpus,
    )
