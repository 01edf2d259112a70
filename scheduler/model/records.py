"""What the store keeps, as immutable records: the shared language of controller, API and store."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from scheduler.model.job import Job, JobState
from scheduler.model.plan import Allocation


class StopReason(str, Enum):
    """Why the controller asked the current attempt of a job to stop."""

    PREEMPT = "preempt"  # → PENDING, restart_count + 1, preemption_count + 1
    CANCEL = "cancel"  # → CANCELLED
    TIMEOUT = "timeout"  # → TIMEOUT
    NODE_FAIL = "node_fail"  # a node of the gang died → PENDING, restart_count + 1
    # A node of the job changed region, out of the job's data region → PENDING, restart_count + 1
    REGION_CHANGE = "region_change"


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job with the controller's bookkeeping. `job.restart_count` is the current attempt number."""

    job: Job
    allocation: Allocation | None = None  # GPUs held now (STARTING, RUNNING, PREEMPTING)
    pending_reason: str | None = None  # PendingReason.message while PENDING
    stop_reason: StopReason | None = None  # set while a stop of the current attempt is under way
    stop_requested_at: float | None = None
    # Written by the API only (a cancel is a request; the controller carries it out):
    cancel_requested_at: float | None = None
    cancel_grace_s: float | None = None
    updated_at: float = 0.0
    # Failed starts in a row (transient backend errors) and when the job may be placed again.
    start_failures: int = 0
    retry_at: float | None = None

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def state(self) -> JobState:
        return self.job.state

    @property
    def team(self) -> str:
        return self.job.team


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One line of a job's history (Slurm's sacct / Kueue's events). `seq` is assigned by the store."""

    job_id: str
    time: float
    kind: str  # SUBMITTED PLACED STARTED PREEMPTING REQUEUED NODE_FAIL TIMEOUT SUCCEEDED FAILED ...
    message: str = ""  # what the job's team may read
    attempt: int = 0
    node: str = ""
    seq: int = 0
    private_detail: str = ""  # what only an admin, or the team of related_job, may read
    related_job: str = ""  # another job this one concerns (its preemptor, ...), if any


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited decision or action: who (`actor`), what (`decision`, the job, the nodes with their
    regions), why (`detail`) and the data-residency check (invariant 6). The store chains every record
    to the one before it by hash (scheduler/model/audit_chain.py)."""

    time: float
    job_id: str
    # place | place-refused | preempt | requeue | reject | cancel | timeout | cordon | uncordon |
    # residency_conflict[_cleared] | token-create | token-revoke | config | denied | denied-dropped
    decision: str
    attempt: int = 0
    nodes: tuple[str, ...] = ()
    node_regions: tuple[str, ...] = ()
    data_region: str = "any"
    residency_ok: bool = True
    detail: str = ""  # what the job's team may read
    seq: int = 0
    private_detail: str = ""  # what only an admin, or the team of related_job, may read
    related_job: str = ""
    actor: str = "controller"  # who: the controller, or a token ("team (token 7)", "anonymous", ...)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """A queue's decayed GPU-seconds `value` at time `at`, and the GPUs it holds from then on."""

    queue: str
    value: float
    at: float
    gpus: int


@dataclass(frozen=True, slots=True)
class Cordon:
    """A node taken out of scheduling (it runs what it has, takes nothing new) and why."""

    node: str
    reason: str
    at: float
    by: str = "controller"


@dataclass(slots=True)
class Batch:
    """Everything one controller step changes, committed by Store.apply() in one transaction."""

    updates: list[JobRecord] = field(default_factory=list)  # full rewrite of controller-owned columns
    events: list[EventRecord] = field(default_factory=list)
    audit: list[AuditRecord] = field(default_factory=list)
    pending_reasons: dict[str, str | None] = field(default_factory=dict)  # job id → reason (PENDING only)
    usage: list[UsageRecord] = field(default_factory=list)  # upserted by queue
    cordons: list[Cordon] = field(default_factory=list)  # upserted by node

    def __bool__(self) -> bool:
        return bool(
            self.updates or self.events or self.audit or self.pending_reasons or self.usage or self.cordons
        )
