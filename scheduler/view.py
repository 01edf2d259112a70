"""What the API may ask of the running controller (it lives in the same process)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from scheduler.model.cluster import Node
from scheduler.model.job import Job, JobSpec
from scheduler.model.plan import Allocation
from scheduler.model.queue import ClusterConfig, PriorityClass, Queue
from scheduler.model.snapshot import RunningJob
from scheduler.policy.config import PolicyConfig
from scheduler.policy.suggest import Suggestion


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """One queue as `corral queues` shows it."""

    queue: Queue
    used: Mapping[str, int]  # gpu type → GPUs held by its jobs now
    borrowed: int  # GPUs it uses above its quota (all types)
    pending: int  # its PENDING jobs
    running: int  # its jobs holding GPUs
    fair_share: float = 0.0  # its share (0–1) of the cluster's recent, decayed GPU usage

    @classmethod
    def of(
        cls, queue: Queue, used: Mapping[str, int], pending: int, running: int, usage: Mapping[str, float]
    ) -> QueueStatus:
        """A queue's status from the GPUs its jobs hold and every queue's decayed usage (the
        controller and the simulator's metrics both build it this way)."""
        borrowed = sum(max(0, g - queue.nominal(t)) for t, g in used.items())
        total = sum(usage.values())
        share = usage.get(queue.name, 0.0) / total if total > 0 else 0.0
        return cls(queue, dict(used), borrowed, pending, running, share)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node: Node
    used_gpus: int
    jobs: tuple[str, ...] = ()
    drift_gpus: int = 0  # GPUs Corral counts free that Ray has not had free for a while
    cordon_reason: str = ""  # why it is cordoned (state draining), if it is


@dataclass(frozen=True, slots=True)
class ClusterView:
    """The controller's latest picture of the cluster (taken at its last cycle)."""

    nodes: Sequence[NodeStatus]
    queues: Sequence[QueueStatus]
    priority_classes: Sequence[PriorityClass]
    time: float
    queue_positions: Mapping[str, int] = field(default_factory=dict)  # pending job id → 1-based position
    jobs_by_state: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (queue, state) → jobs
    pending_by_reason: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (queue, code) → jobs
    job_queues: Mapping[str, str] = field(default_factory=dict)  # job holding GPUs → its queue
    # pending job id → estimated start (unix time; None: not within the forecast's bounds), from the
    # latest forecast (scheduler/forecast), which runs beside the controller, never in its cycle
    estimated_starts: Mapping[str, float | None] = field(default_factory=dict)
    # False until a cycle drew it: a controller that just started or took over has no queues or
    # nodes to show yet, and empty lists would say there are none
    drawn: bool = True


@dataclass(frozen=True, slots=True)
class SchedulingState:
    """What the controller's last cycle decided over, immutable: a forecast or a what-if replays it
    forward in the simulator, off the decide path."""

    time: float
    nodes: Sequence[Node]
    pending: Sequence[Job]
    running: Sequence[RunningJob]
    usage: Mapping[str, float]  # queue → decayed GPU-seconds (fair share)


def finished_runtime(job: Job) -> float | None:
    """The GPU-holding seconds of a finished job (all its attempts), or None if it never ran."""
    if job.started_at is None or job.finished_at is None:
        return None
    last = max(0.0, job.finished_at - job.started_at)
    attained = job.attained_gpu_s / job.spec.gpus if job.spec.gpus else 0.0
    return max(last, attained)


@dataclass(frozen=True, slots=True)
class ReplayInputs:
    """The last cycle's state with the configuration it ran under: what `corral whatif` replays."""

    state: SchedulingState
    cluster: ClusterConfig
    policy: PolicyConfig


@dataclass(frozen=True, slots=True)
class DryRun:
    """Where a spec would go if submitted now: an allocation, or why it would wait or be refused."""

    allocation: Allocation | None
    pending_reason: str | None
    rejected: str | None = None


class SpecError(ValueError):
    """A spec that can never run here; `field` names the spec field, the message says the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ControllerHandle(Protocol):
    def view(self) -> ClusterView:
        """The latest cluster view (cheap: no store access)."""
        ...

    def check_spec(self, spec: JobSpec) -> JobSpec:
        """The spec as it will be accepted (its queue's default time limit filled in); SpecError for
        an unknown queue or priority class, a GPU type or region with no nodes, or a shape no node set
        can ever hold."""
        ...

    def dry_run(self, spec: JobSpec, team: str) -> DryRun:
        """Run decide() on the current snapshot with this spec added; changes nothing."""
        ...

    def suggestions(self, job_id: str) -> Sequence[Suggestion]:
        """What would start a waiting job now (scheduler/policy/suggest.py), if computed yet."""
        ...

    def wake(self) -> None:
        """Ask for a cycle soon (a submission or cancel arrived)."""
        ...

    def replay_inputs(self) -> ReplayInputs:
        """The state the last cycle decided over and the configuration (read-only; NotReady before
        the first cycle, NotLeader on a follower)."""
        ...

    def cordons_changed(self) -> None:
        """An admin cordoned or uncordoned a node in the store: read the cordons again, run a cycle."""
        ...

    def health(self) -> Mapping[str, str]:
        """'controller', 'ray', 'store' → 'ok' or a short problem."""
        ...

    def role(self) -> Mapping[str, object]:
        """{"leader": bool, "epoch": the lease epoch while leading (else 0), "leader_url": str}."""
        ...


class NotReady(RuntimeError):
    """The controller cannot answer yet (it has not seen the cluster: just started or took over);
    the API answers 503 with Retry-After, and the client retries."""


class NotLeader(NotReady):
    """Asked of a follower what only the leading controller can answer (a dry run)."""

    def __init__(self, leader_url: str) -> None:
        where = f" at {leader_url}" if leader_url else ""
        super().__init__(
            f"this controller is a follower: the leader{where} answers dry runs and what-if; retry"
        )
        self.leader_url = leader_url


def empty_view(priority_classes: Sequence[PriorityClass], time: float = 0.0) -> ClusterView:
    """What a controller shows before it has seen the cluster."""
    return ClusterView(nodes=(), queues=(), priority_classes=tuple(priority_classes), time=time, drawn=False)
