"""The immutable input of one scheduling cycle."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.model.capacity import CapacityIndex
from scheduler.model.cluster import Node, PoolKey
from scheduler.model.job import Job, JobState
from scheduler.model.pending_shapes import PendingShapes
from scheduler.model.plan import Allocation
from scheduler.model.queue import PriorityClass, Queue


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job holding GPUs: running, starting, or leaving after a preemption (`preempting`)."""

    job: Job
    allocation: Allocation
    pool: PoolKey  # the region and GPU type of its nodes
    started_at: float
    checkpoint_interval_s: float | None = None  # None: the job's checkpoints are not known
    gpus: int = field(init=False)
    id: str = field(init=False)
    queue: str = field(init=False)
    preempting: bool = field(init=False)  # in its grace period after a preemption: leaving
    borrowed_gpus: int = field(init=False)  # above its queue's quota when placed: always reclaimable

    def __post_init__(self) -> None:
        # Read on every cycle's hot path: computed once.
        object.__setattr__(self, "gpus", self.allocation.gpus)
        object.__setattr__(self, "borrowed_gpus", self.allocation.borrowed_gpus)
        object.__setattr__(self, "id", self.job.id)
        object.__setattr__(self, "queue", self.job.spec.queue)
        object.__setattr__(self, "preempting", self.job.state is JobState.PREEMPTING)

    @property
    def gpu_type(self) -> str:
        return self.pool.gpu_type

    @property
    def expected_end(self) -> float | None:
        """When its time limit stops it at the latest; None if it has no time limit."""
        limit = self.job.spec.time_limit_s
        return None if limit is None else self.started_at + limit

    def work_at_risk_s(self, now: float) -> float:
        """Seconds of progress lost if it stopped now (since its last checkpoint)."""
        ran = max(0.0, now - self.started_at)
        if self.checkpoint_interval_s is None:
            return ran
        return ran % self.checkpoint_interval_s


@dataclass(frozen=True, slots=True)
class RunningChange:
    """How a pool's running jobs differ from an earlier list of them (told apart by identity)."""

    removed: frozenset[int]  # id() of the earlier list's jobs that are gone (alive in that list)
    gone: tuple[RunningJob, ...]  # those jobs
    added: tuple[RunningJob, ...]  # the jobs that list did not hold


# A pool's running jobs as an owner's last snapshot held them, and the change from them to the
# current ones (None where so much changed that a cycle derives afresh): model/running_pools.py.
LentChange = tuple[Sequence[RunningJob], RunningChange | None]


@dataclass(frozen=True, slots=True)
class PoolShape:
    """What a pool could ever offer (all its nodes, whatever their state): to reject the impossible."""

    nodes: int
    max_gpus_per_node: int
    nodes_by_min_gpus: tuple[int, ...]  # [g] = nodes with at least g GPUs

    def nodes_with(self, gpus_per_node: int) -> int:
        """How many of its nodes have at least `gpus_per_node` GPUs."""
        if gpus_per_node >= len(self.nodes_by_min_gpus):
            return 0
        return self.nodes_by_min_gpus[gpus_per_node]

    def can_ever_hold(self, nodes: int, gpus_per_node: int) -> bool:
        return self.nodes_with(gpus_per_node) >= nodes


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """Everything a cycle may look at. `pending[queue]` is in the policy's within-queue order."""

    nodes: Mapping[str, Node]
    capacity: CapacityIndex
    queues: Mapping[str, Queue]
    priority_classes: Mapping[str, PriorityClass]
    pending: Mapping[str, Sequence[Job]]
    running: Mapping[str, RunningJob]
    queue_usage: Mapping[str, Mapping[str, int]]  # queue → gpu type → GPUs held now
    usage_history: Mapping[str, float] = field(default_factory=dict)  # queue → decayed GPU-seconds
    gpus_by_type: Mapping[str, int] = field(default_factory=dict)  # schedulable GPUs per type
    pool_shapes: Mapping[PoolKey, PoolShape] = field(default_factory=dict)  # all nodes, any state
    # GPUs jobs just gave back that Ray has not released yet (the live controller leaves them out
    # of `capacity` for the moment): free soon, as a leaving job's are. None in the simulator.
    settling: Allocation | None = None
    # What a cycle derives from the running jobs alone (their grouping by pool, the victim
    # candidates, ...) may be reused by a later cycle while they are unchanged: an owner that
    # keeps its running jobs between cycles (the simulator) bumps `running_version` whenever they
    # change and lends one `memo` to all its cycles. -1 (the default): derive everything afresh.
    running_version: int = -1
    memo: dict[object, object] | None = None
    # The running jobs by pool (pools without any left out), each in `running`'s order, and for
    # the pools changed since the owner's last snapshot, their list then and the change: kept by
    # an owner that lends `memo` (model/running_pools.py). None: the cycle groups them itself.
    running_by_pool: Mapping[PoolKey, Sequence[RunningJob]] | None = None
    running_changes: Mapping[PoolKey, LentChange] | None = None
    # Each queue's pending jobs grouped by shape, kept by an owner that needs no reasons for the
    # jobs a cycle would only find waiting (the simulator without an observer): the cycle may
    # then stop as soon as no job left can change anything (see model/pending_shapes.py).
    pending_shapes: PendingShapes | None = None

    @classmethod
    def build(
        cls,
        nodes: Iterable[Node],
        queues: Iterable[Queue],
        priority_classes: Iterable[PriorityClass],
        pending: Iterable[Job],
        running: Iterable[RunningJob] = (),
        usage_history: Mapping[str, float] | None = None,
        pending_key: object = None,
    ) -> ClusterSnapshot:
        """A snapshot from plain lists (the controller and tests); the simulator keeps its own indexes.

        `pending_key`, if given, is the policy's within-queue sort key (a callable taking a Job);
        otherwise jobs keep the order given.
        """
        node_map = {n.id: n for n in nodes}
        running_map = {r.id: r for r in running}
        capacity = CapacityIndex.build(node_map.values(), (r.allocation for r in running_map.values()))
        queue_map = {q.name: q for q in queues}
        by_queue: dict[str, list[Job]] = {name: [] for name in queue_map}
        for job in pending:
            by_queue.setdefault(job.spec.queue, []).append(job)
        if callable(pending_key):
            for jobs in by_queue.values():
                jobs.sort(key=pending_key)
        return cls(
            nodes=node_map,
            capacity=capacity,
            queues=queue_map,
            priority_classes={p.name: p for p in priority_classes},
            pending=by_queue,
            running=running_map,
            queue_usage=usage_of(running_map.values()),
            usage_history=dict(usage_history or {}),
            gpus_by_type=gpus_by_type(node_map.values()),
            pool_shapes=pool_shapes(node_map.values()),
        )

    @property
    def pending_count(self) -> int:
        return sum(len(jobs) for jobs in self.pending.values())

    def priority_value(self, job: Job) -> int:
        pc = self.priority_classes.get(job.spec.priority)
        return pc.value if pc is not None else 0


def usage_of(running: Iterable[RunningJob]) -> dict[str, dict[str, int]]:
    usage: dict[str, dict[str, int]] = {}
    for r in running:
        per_type = usage.setdefault(r.queue, {})
        per_type[r.gpu_type] = per_type.get(r.gpu_type, 0) + r.gpus
    return usage


def gpus_by_type(nodes: Iterable[Node]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for n in nodes:
        if n.schedulable:
            totals[n.gpu_type] = totals.get(n.gpu_type, 0) + n.gpus
    return totals


def pool_shapes(nodes: Iterable[Node]) -> dict[PoolKey, PoolShape]:
    sizes: dict[PoolKey, list[int]] = {}
    for n in nodes:
        sizes.setdefault(n.pool, []).append(n.gpus)
    shapes: dict[PoolKey, PoolShape] = {}
    for key, gpus in sizes.items():
        top = max(gpus)
        at_least = tuple(sum(1 for g in gpus if g >= k) for k in range(top + 1))
        shapes[key] = PoolShape(nodes=len(gpus), max_gpus_per_node=top, nodes_by_min_gpus=at_least)
    return shapes
