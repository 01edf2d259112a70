"""What the Python client returns: the API's JSON as typed models (the same fields as the server's
response models in scheduler/api/schemas.py, checked by tests/client; fields a newer server adds
are ignored, so an older client keeps working)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from scheduler.model.job import JobSpec, JobState

__all__ = ["Job", "JobArray", "JobState", "Node", "NodeAllocation", "Queue", "Suggestion"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class NodeAllocation(_Out):
    node: str
    gpus: list[int]


class Suggestion(_Out):
    """A change that would start a waiting job now (verified by a scheduling cycle), e.g.
    kind "shape", change {"nodes": 1, "gpus_per_node": 8}, flag "--gpus 8"."""

    kind: str
    change: dict[str, int | float | str]
    flag: str
    text: str


class Job(_Out):
    """A job as the API shows it (GET /v1/jobs/{id})."""

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
    estimated_start: float | None = None  # pending: expected start (unix time); None: unknown
    allocation: list[NodeAllocation] | None
    time_limit_s: float | None
    run_time_s: float | None
    cancel_requested: bool
    spec: JobSpec
    array_id: str | None = None  # the job array it is a task of (its first task's id)
    array_index: int | None = None  # its index there (CORRAL_ARRAY_INDEX)
    suggestions: list[Suggestion] = []

    @property
    def terminal(self) -> bool:
        """Ended: SUCCEEDED, FAILED, CANCELLED or TIMEOUT."""
        return self.state.terminal

    @property
    def succeeded(self) -> bool:
        return self.state is JobState.SUCCEEDED


class JobArray(_Out):
    """A job array (GET /v1/arrays/{id}): one job per index, in index order."""

    array_id: str
    array: str
    max_running: int | None
    tasks: list[Job]

    @property
    def id(self) -> str:
        return self.array_id

    @property
    def terminal(self) -> bool:
        """Every task ended."""
        return all(t.terminal for t in self.tasks)

    def task(self, index: int) -> Job:
        """The task of this index (KeyError if the array has none)."""
        for t in self.tasks:
            if t.array_index == index:
                return t
        raise KeyError(index)


class Queue(_Out):
    """A queue as GET /v1/queues shows it."""

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


class Node(_Out):
    """A node as GET /v1/nodes shows it (a team sees only its own jobs on it)."""

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
    jobs: list[str]
    cordon_reason: str = ""
    drift_gpus: int = 0
