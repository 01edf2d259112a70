"""Rows ↔ records: the only place that knows how a JobRecord, an event or an audit line is laid out."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import RowMapping

from scheduler.model.job import Job, JobSpec, JobState
from scheduler.model.plan import Allocation
from scheduler.model.records import AuditRecord, Cordon, EventRecord, JobRecord, StopReason, UsageRecord

MAX_ID = 2**63 - 1  # ids are 64-bit signed integers in both databases


def job_pk(job_id: str) -> int | None:
    """The primary key a job id names (leading zeros allowed), or None when it names no job at all."""
    if not (job_id.isascii() and job_id.isdigit()) or len(job_id.lstrip("0")) > 19:
        return None
    pk = int(job_id)
    return pk if pk <= MAX_ID else None


def allocation_json(allocation: Allocation | None) -> dict[str, Any] | None:
    return None if allocation is None else allocation.model_dump(mode="json")


def controller_columns(record: JobRecord) -> dict[str, Any]:
    """The columns the controller owns (never the spec, never cancel_*)."""
    job = record.job
    return {
        "state": job.state.value,
        "started_at": job.started_at,
        "first_started_at": job.first_started_at,
        "finished_at": job.finished_at,
        "restart_count": job.restart_count,
        "preemption_count": job.preemption_count,
        "attained_gpu_s": job.attained_gpu_s,
        "exit_code": job.exit_code,
        "allocation": allocation_json(record.allocation),
        "pending_reason": record.pending_reason,
        "stop_reason": None if record.stop_reason is None else record.stop_reason.value,
        "stop_requested_at": record.stop_requested_at,
        "updated_at": record.updated_at,
        "start_failures": record.start_failures,
        "retry_at": record.retry_at,
    }


def job_record(row: RowMapping) -> JobRecord:
    job = Job(
        id=str(row["id"]),
        spec=JobSpec.model_validate(row["spec"]),
        team=row["team"],
        state=JobState(row["state"]),
        submitted_at=row["submitted_at"],
        started_at=row["started_at"],
        first_started_at=row["first_started_at"],
        finished_at=row["finished_at"],
        restart_count=row["restart_count"],
        preemption_count=row["preemption_count"],
        attained_gpu_s=row["attained_gpu_s"],
        exit_code=row["exit_code"],
        array_id=None if row["array_id"] is None else str(row["array_id"]),
        array_index=row["array_index"],
    )
    allocation = row["allocation"]
    stop_reason = row["stop_reason"]
    return JobRecord(
        job=job,
        allocation=None if allocation is None else Allocation.model_validate(allocation),
        pending_reason=row["pending_reason"],
        stop_reason=None if stop_reason is None else StopReason(stop_reason),
        stop_requested_at=row["stop_requested_at"],
        cancel_requested_at=row["cancel_requested_at"],
        cancel_grace_s=row["cancel_grace_s"],
        updated_at=row["updated_at"],
        start_failures=row["start_failures"],
        retry_at=row["retry_at"],
    )


def event_columns(event: EventRecord) -> dict[str, Any]:
    return {
        "job_id": event.job_id,
        "time": event.time,
        "kind": event.kind,
        "message": event.message,
        "attempt": event.attempt,
        "node": event.node,
        "private_detail": event.private_detail,
        "related_job": event.related_job,
    }


def event_record(row: RowMapping) -> EventRecord:
    return EventRecord(
        job_id=row["job_id"],
        time=row["time"],
        kind=row["kind"],
        message=row["message"],
        attempt=row["attempt"],
        node=row["node"],
        seq=row["seq"],
        private_detail=row["private_detail"],
        related_job=row["related_job"],
    )


def audit_columns(record: AuditRecord) -> dict[str, Any]:
    return {
        "time": record.time,
        "job_id": record.job_id,
        "decision": record.decision,
        "attempt": record.attempt,
        "nodes": list(record.nodes),
        "node_regions": list(record.node_regions),
        "data_region": record.data_region,
        "residency_ok": record.residency_ok,
        "detail": record.detail,
        "private_detail": record.private_detail,
        "related_job": record.related_job,
        "actor": record.actor,
    }


def audit_record(row: RowMapping) -> AuditRecord:
    return AuditRecord(
        time=row["time"],
        job_id=row["job_id"],
        decision=row["decision"],
        attempt=row["attempt"],
        nodes=tuple(row["nodes"]),
        node_regions=tuple(row["node_regions"]),
        data_region=row["data_region"],
        residency_ok=bool(row["residency_ok"]),
        detail=row["detail"],
        seq=row["seq"],
        private_detail=row["private_detail"],
        related_job=row["related_job"],
        actor=row["actor"],
    )


def usage_columns(record: UsageRecord) -> dict[str, Any]:
    return {"queue": record.queue, "value": record.value, "at": record.at, "gpus": record.gpus}


def usage_record(row: RowMapping) -> UsageRecord:
    return UsageRecord(queue=row["queue"], value=row["value"], at=row["at"], gpus=row["gpus"])


def cordon_columns(record: Cordon) -> dict[str, Any]:
    return {"node": record.node, "reason": record.reason, "at": record.at, "by": record.by}


def cordon_record(row: RowMapping) -> Cordon:
    return Cordon(node=row["node"], reason=row["reason"], at=row["at"], by=row["by"])
