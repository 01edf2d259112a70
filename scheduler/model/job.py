"""Jobs: the user's spec, the job's lifecycle (one transition table) and why it waits."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scheduler.model.cluster import ANY

MAX_NODES_PER_JOB = 1024
MAX_GPUS_PER_NODE = 64


class JobState(str, Enum):
    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    PREEMPTING = "PREEMPTING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT})

# The one lifecycle table. RUNNING → PENDING is a requeue after node loss; PREEMPTING → PENDING after
# a preemption's grace period; STARTING → PENDING when the start failed for a node's reason.
_S = JobState
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    _S.PENDING: frozenset({_S.STARTING, _S.CANCELLED, _S.FAILED}),
    _S.STARTING: frozenset({_S.RUNNING, _S.PENDING, _S.PREEMPTING, _S.FAILED, _S.CANCELLED}),
    _S.RUNNING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.CANCELLED, _S.TIMEOUT, _S.PREEMPTING, _S.PENDING}),
    _S.PREEMPTING: frozenset({_S.PENDING, _S.SUCCEEDED, _S.FAILED, _S.CANCELLED, _S.TIMEOUT}),
    _S.SUCCEEDED: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.TIMEOUT: frozenset(),
}


class IllegalTransition(ValueError):
    pass


def check_transition(current: JobState, new: JobState) -> None:
    """Raise IllegalTransition unless the lifecycle table allows current → new."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"job cannot go from {current.value} to {new.value}")


class PendingCode(str, Enum):
    """Why a job waits; CamelCase as Slurm's squeue shows it."""

    PRIORITY = "Priority"  # jobs ahead of it in order take what is free
    RESOURCES = "Resources"  # not enough free GPUs of its kind right now
    QUOTA_EXCEEDED = "QuotaExceeded"  # its queue is at quota and cannot borrow more
    TOPOLOGY = "Topology"  # enough GPUs, but not on enough whole nodes
    REGION_CAPACITY = "RegionCapacity"  # its data region can never hold it
    GPU_TYPE_UNAVAILABLE = "GpuTypeUnavailable"  # no such GPU type in the cluster / region
    RESERVED = "Reserved"  # it holds a backfill reservation or waits for preempted jobs to leave
    WAITING_FOR_SCHEDULING = "WaitingForScheduling"  # not yet considered by a cycle


@dataclass(frozen=True, slots=True)
class PendingReason:
    """A reason code and the shortfall in words: 'Resources: needs 4×8 H100 in cn-north; ...'."""

    code: PendingCode
    detail: str = ""

    @property
    def message(self) -> str:
        return f"{self.code.value}: {self.detail}" if self.detail else self.code.value


class JobSpec(BaseModel):
    """What a user submits. Every limit here is checked before a job is accepted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="job", min_length=1, max_length=128)
    queue: str = Field(default="default", min_length=1, max_length=64)
    priority: str = Field(default="normal", min_length=1, max_length=64)
    nodes: int = Field(default=1, ge=1, le=MAX_NODES_PER_JOB)
    gpus_per_node: int = Field(default=1, ge=1, le=MAX_GPUS_PER_NODE)
    gpu_type: str = Field(default=ANY, min_length=1)
    command: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = None
    time_limit_s: float | None = Field(default=None, gt=0)
    checkpoint_dir: str | None = None
    data_region: str = Field(default=ANY, min_length=1)
    preemptible: bool = True
    min_runtime_s: float = Field(default=0.0, ge=0)
    grace_period_s: float = Field(default=30.0, ge=0, le=3600)
    idempotency_key: str | None = Field(default=None, max_length=128)

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        if isinstance(value, str):
            return ["/bin/sh", "-c", value]
        return value

    @model_validator(mode="after")
    def _check_shape(self) -> JobSpec:
        if self.nodes > 1 and self.gpus_per_node == 0:
            raise ValueError("a multi-node job needs gpus_per_node ≥ 1")
        return self

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


class Job(BaseModel):
    """A submitted job with its lifecycle; immutable, updated by copy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    spec: JobSpec
    team: str = "default"
    state: JobState = JobState.PENDING
    submitted_at: float = 0.0
    started_at: float | None = None  # start of the current (or last) attempt
    first_started_at: float | None = None
    finished_at: float | None = None
    restart_count: int = 0
    preemption_count: int = 0
    attained_gpu_s: float = 0.0  # GPU-seconds used by earlier attempts (for LAS and fair share)
    runtime_hint_s: float | None = None  # oracle runtime known only to the simulator (for SJF)
    exit_code: int | None = None

    @property
    def priority_class(self) -> str:
        return self.spec.priority

    def transition(self, new: JobState, **changes: Any) -> Job:
        """A copy in state `new`, after checking the lifecycle table."""
        check_transition(self.state, new)
        return self.model_copy(update={"state": new, **changes})
