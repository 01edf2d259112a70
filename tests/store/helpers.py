"""Small builders for store tests."""

from __future__ import annotations

from typing import Any

from scheduler.model.job import JobSpec, JobState
from scheduler.model.plan import Allocation, NodeAllocation
from scheduler.model.records import JobRecord


def spec(**fields: Any) -> JobSpec:
    return JobSpec(**{"name": "train", "queue": "team-a", "command": ["python", "train.py"], **fields})


def allocation(*nodes: tuple[str, tuple[int, ...]]) -> Allocation:
    return Allocation(nodes=tuple(NodeAllocation(node=node, gpus=gpus) for node, gpus in nodes))


def running(record: JobRecord, held: Allocation | None, now: float = 10.0) -> JobRecord:
    """The controller's view of `record` after placing it on `held` (or releasing it when None)."""
    state = JobState.RUNNING if held is not None else JobState.PENDING
    job = record.job.model_copy(update={"state": state, "started_at": now if held else None})
    return JobRecord(job=job, allocation=held, pending_reason=None if held else "Resources", updated_at=now)
