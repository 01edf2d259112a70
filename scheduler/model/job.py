"""Jobs: the user's spec, the job's lifecycle (one transition table) and why it waits."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationInfo, field_validator

from scheduler.model.array import MAX_ARRAY_TEXT, ArrayError, max_running_of, parse_array
from scheduler.model.cluster import ANY

MAX_NODES_PER_JOB = 1024
MAX_GPUS_PER_NODE = 64

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
"""Names of jobs, queues, priority classes, GPU types and regions: the rule Kubernetes uses for label
values, so a name is safe in a label, a path, a log line and a terminal."""
_NAME = re.compile(NAME_PATTERN)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces

MAX_TIME_S = 366 * 86400.0  # a year: longer limits are typos, and keep arithmetic on times finite
MAX_COMMAND_ARGS = 4096

RESERVED_ENV = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",
        "RANK",
        "NODE_RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
    }
)
"""Environment variables the scheduler sets for each rank (plus every CORRAL_*): a job may not set
them, or a 1-GPU job could claim a whole node's devices or another job's rendezvous."""

SUBMISSION: dict[str, bool] = {"submission": True}
"""Validation context of a user's submission (the API, the CLI): it adds the submission rules — a
non-empty command, names, absolute paths, no reserved environment. Specs Corral stored or built
itself (store rows, simulator traces, tests) are validated without them, so a rule added later
never makes an accepted job unreadable."""

Seconds = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A number of seconds: an int or a float, finite (no Infinity, NaN or 1e309), never a bool or string."""


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
    ARRAY_TASK_LIMIT = "JobArrayTaskLimit"  # its array already runs as many tasks as its %N allows


@dataclass(frozen=True, slots=True)
class PendingReason:
    """A reason code and the shortfall in words: 'Resources: needs 4×8 H100 in cn-north; ...'."""

    code: PendingCode
    detail: str = ""

    @property
    def message(self) -> str:
        return f"{self.code.value}: {self.detail}" if self.detail else self.code.value


class JobSpec(BaseModel):
    """What a user submits. Every limit here is checked before a job is accepted.

    Counts are strict integers (`true` is not a GPU count) and times finite numbers of seconds,
    always. A user's spec is validated with `JobSpec.submitted(data)`, which adds the submission
    rules (a non-empty command, names, absolute paths, no reserved environment variables).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="job", min_length=1, max_length=128)
    queue: str = Field(default="default", min_length=1, max_length=64)
    priority: str = Field(default="normal", min_length=1, max_length=64)
    nodes: StrictInt = Field(default=1, ge=1, le=MAX_NODES_PER_JOB)
    gpus_per_node: StrictInt = Field(default=1, ge=1, le=MAX_GPUS_PER_NODE)
    gpu_type: str = Field(default=ANY, min_length=1, max_length=64)
    command: list[str] = Field(default_factory=list, max_length=MAX_COMMAND_ARGS, validate_default=True)
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = Field(default=None, max_length=4096)
    time_limit_s: Seconds | None = Field(default=None, gt=0, le=MAX_TIME_S)
    checkpoint_dir: str | None = Field(default=None, max_length=4096)
    data_region: str = Field(default=ANY, min_length=1, max_length=64)
    preemptible: StrictBool = True
    min_runtime_s: Seconds = Field(default=0.0, ge=0, le=MAX_TIME_S)
    grace_period_s: Seconds = Field(default=30.0, ge=0, le=3600)
    idempotency_key: str | None = Field(default=None, max_length=128)
    array: str | None = Field(default=None, min_length=1, max_length=MAX_ARRAY_TEXT)
    """Slurm's --array: `0-15`, `1,3,5-9:2`, `0-99%8` (one job per index, at most 8 running at once)."""

    @field_validator("array", mode="before")
    @classmethod
    def _array_text(cls, value: Any) -> Any:
        # YAML reads `array: 7` as a number: a one-task array.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("array")
    @classmethod
    def _check_array(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or _trusted(info):
            return value
        try:
            parse_array(value)
        except ArrayError as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                raise ValueError("must not be empty")
            return ["/bin/sh", "-c", value]
        return value

    @field_validator("command")
    @classmethod
    def _check_command(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if _trusted(info):
            return value
        if not value or not value[0]:
            raise ValueError("must not be empty")
        if any("\0" in arg for arg in value):
            raise ValueError("must not contain NUL characters")
        return value

    @field_validator("name", "queue", "priority", "gpu_type", "data_region")
    @classmethod
    def _check_name(cls, value: str, info: ValidationInfo) -> str:
        if not _trusted(info) and not _NAME.match(value):
            raise ValueError(
                "must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return value

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if _trusted(info):
            return value
        for key, text in value.items():
            if not _ENV_NAME.match(key):
                raise ValueError(f"{_quote(key)} is not a variable name (letters, digits, '_')")
            if key in RESERVED_ENV or key.startswith("CORRAL_"):
                raise ValueError(f"{key} is set by the scheduler for each rank and cannot be overridden")
            if "\0" in text:
                raise ValueError(f"the value of {key} must not contain NUL characters")
        return value

    @field_validator("working_dir", "checkpoint_dir")
    @classmethod
    def _check_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or _trusted(info):
            return value
        if "\0" in value or not value.startswith("/"):
            raise ValueError("must be an absolute path (starting with /)")
        if ".." in value.split("/"):
            raise ValueError("must not contain '..'")
        return posixpath.normpath(value)

    @field_validator("idempotency_key")
    @classmethod
    def _check_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not _trusted(info) and not _IDEMPOTENCY_KEY.match(value):
            raise ValueError("must be 1 to 128 printable ASCII characters without spaces")
        return value

    @classmethod
    def submitted(cls, data: Any) -> JobSpec:
        """A user's spec (a mapping), with the submission rules; raises pydantic's ValidationError."""
        return cls.model_validate(data, context=SUBMISSION)

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


def _trusted(info: ValidationInfo) -> bool:
    """Not a user's submission: the submission rules do not apply."""
    return not (info.context and info.context.get("submission"))


def _quote(text: str, limit: int = 40) -> str:
    """A user's value in an error message: repr'd (no control characters) and cut short."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


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
    array_id: str | None = None  # the array it is a task of: the id of the array's first task
    array_index: int | None = None  # its index in that array (CORRAL_ARRAY_INDEX)

    @property
    def priority_class(self) -> str:
        return self.spec.priority

    @property
    def array_max_running(self) -> int | None:
        """The `%N` cap of its array: at most N of its tasks hold GPUs at once (None: no cap)."""
        return None if self.array_id is None else max_running_of(self.spec.array)

    def transition(self, new: JobState, **changes: Any) -> Job:
        """A copy in state `new`, after checking the lifecycle table."""
        check_transition(self.state, new)
        return self.model_copy(update={"state": new, **changes})
