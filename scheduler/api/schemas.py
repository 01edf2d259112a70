"""Response bodies of the API (one Job schema for list and get) and their builders from records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from scheduler.control.view import DryRun, NodeStatus, QueueStatus
from scheduler.model.job import JobSpec, JobState
from scheduler.model.plan import Allocation
from scheduler.store.records import AuditRecord, EventRecord, JobRecord


class ErrorOut(BaseModel):
    error: str
    field: str | None = None


class NodeAllocationOut(BaseModel):
    node: str
    gpus: list[int]


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
    allocation: list[NodeAllocationOut] | None
    time_limit_s: float | None
    run_time_s: float | None
    cancel_requested: bool
    spec: JobSpec


class EventOut(BaseModel):
    seq: int
    job_id: str
    time: float
    kind: str
    message: str
    attempt: int
    node: str


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


class WhoAmIOut(BaseModel):
    team: str
    admin: bool


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_s: float | None = Field(default=None, ge=0, le=3600)


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


def job_fields(record: JobRecord, now: float, positions: Mapping[str, int]) -> dict[str, Any]:
    job, spec = record.job, record.job.spec
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
        "queue_position": positions.get(job.id) if job.state is JobState.PENDING else None,
        "allocation": allocation_out(record.allocation),
        "time_limit_s": spec.time_limit_s,
        "run_time_s": run_time(record, now),
        "cancel_requested": record.cancel_requested_at is not None,
        "spec": spec,
    }


def job_out(record: JobRecord, now: float, positions: Mapping[str, int]) -> JobOut:
    return JobOut(**job_fields(record, now, positions))


def event_out(e: EventRecord) -> EventOut:
    return EventOut(
        seq=e.seq,
        job_id=e.job_id,
        time=e.time,
        kind=e.kind,
        message=e.message,
        attempt=e.attempt,
        node=e.node,
    )


def audit_out(a: AuditRecord) -> AuditOut:
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
    )


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
    )
