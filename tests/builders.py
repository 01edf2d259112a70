"""Test builders in the style of Kueue's test wrappers.

    job("a").gpus(8).nodes(2).queue("research").priority("high").region("cn-north")
        .gpu_type("H100").submitted(10).build()                      -> Job
    node("n0", region="cn-north", rack="r1", gpus=8, gpu_type="H100")  -> Node
    cluster(racks=2, nodes_per_rack=4, gpus=8, region="cn-north")    -> list[Node]
    queue("q").quota(H100=16).cohort("c").borrowing_limit(8).build() -> Queue
    running(job, ["n0", ("n1", (0, 1))], started_at=0.0, on=nodes)    -> RunningJob
    snapshot(nodes, pending=[...], running=[...], queues=[...])       -> ClusterSnapshot

`snapshot` sorts each queue's pending jobs with the policy's `pending_key`, as the simulator and
the controller do. Without `queues` it makes one queue per queue name it sees, with a quota that
exceeds the whole cluster (so tests that are not about quota are not limited by it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scheduler.model.cluster import ANY, Node, NodeState
from scheduler.model.job import Job, JobSpec, JobState
from scheduler.model.plan import Allocation, NodeAllocation
from scheduler.model.queue import DEFAULT_PRIORITY_CLASSES, ClusterConfig, PriorityClass, Queue
from scheduler.model.snapshot import ClusterSnapshot, RunningJob
from scheduler.policy.config import PolicyConfig
from scheduler.policy.order import pending_key
from scheduler.sim.records import RunResult, TraceJob
from scheduler.sim.runner import Simulator

__all__ = [
    "JobBuilder",
    "QueueBuilder",
    "alloc",
    "cluster",
    "cluster_config",
    "job",
    "node",
    "queue",
    "running",
    "snapshot",
]


class JobBuilder:
    """Fluent builder of a Job (and of its JobSpec / TraceJob)."""

    def __init__(self, job_id: str) -> None:
        self._id = job_id
        self._spec: dict[str, Any] = {"name": job_id}
        self._job: dict[str, Any] = {}

    # --- spec -----------------------------------------------------------------------------
    def gpus(self, per_node: int) -> JobBuilder:
        """GPUs per node."""
        self._spec["gpus_per_node"] = per_node
        return self

    def nodes(self, n: int) -> JobBuilder:
        self._spec["nodes"] = n
        return self

    def queue(self, name: str) -> JobBuilder:
        self._spec["queue"] = name
        return self

    def priority(self, name: str) -> JobBuilder:
        self._spec["priority"] = name
        return self

    def region(self, name: str) -> JobBuilder:
        self._spec["data_region"] = name
        return self

    def gpu_type(self, name: str) -> JobBuilder:
        self._spec["gpu_type"] = name
        return self

    def time_limit(self, seconds: float | None) -> JobBuilder:
        self._spec["time_limit_s"] = seconds
        return self

    def preemptible(self, value: bool = True) -> JobBuilder:
        self._spec["preemptible"] = value
        return self

    def min_runtime(self, seconds: float) -> JobBuilder:
        self._spec["min_runtime_s"] = seconds
        return self

    def grace(self, seconds: float) -> JobBuilder:
        self._spec["grace_period_s"] = seconds
        return self

    def array(self, expression: str, array_id: str, index: int) -> JobBuilder:
        """A task of job array `array_id` (`expression` as submitted, e.g. "0-7%2")."""
        self._spec["array"] = expression
        self._job["array_id"] = array_id
        self._job["array_index"] = index
        return self

    # --- job ------------------------------------------------------------------------------
    def submitted(self, t: float) -> JobBuilder:
        self._job["submitted_at"] = t
        return self

    def attained(self, gpu_s: float) -> JobBuilder:
        self._job["attained_gpu_s"] = gpu_s
        return self

    def runtime(self, seconds: float | None) -> JobBuilder:
        """The oracle runtime hint (SJF)."""
        self._job["runtime_hint_s"] = seconds
        return self

    def preemptions(self, n: int) -> JobBuilder:
        self._job["preemption_count"] = n
        self._job.setdefault("restart_count", n)
        return self

    def state(self, state: JobState) -> JobBuilder:
        self._job["state"] = state
        return self

    def spec(self) -> JobSpec:
        return JobSpec(**self._spec)

    def build(self) -> Job:
        spec = self.spec()
        fields = {"team": spec.queue, **self._job}
        return Job(id=self._id, spec=spec, **fields)

    def trace(self, duration: float) -> TraceJob:
        """A TraceJob that arrives at `submitted` and runs `duration` seconds alone."""
        return TraceJob(
            job_id=self._id,
            submit_time=float(self._job.get("submitted_at", 0.0)),
            duration=duration,
            spec=self.spec(),
        )


def job(job_id: str) -> JobBuilder:
    return JobBuilder(job_id)


def node(
    node_id: str,
    *,
    region: str = "r",
    rack: str = "rack0",
    gpus: int = 8,
    gpu_type: str = "H100",
    nvlink: str = "",
    state: NodeState = NodeState.READY,
    zone: str = "",
) -> Node:
    return Node(
        id=node_id,
        region=region,
        zone=zone,
        rack=rack,
        nvlink_domain=nvlink,
        gpu_type=gpu_type,
        gpus=gpus,
        state=state,
    )


def cluster(
    racks: int = 1,
    nodes_per_rack: int = 4,
    gpus: int = 8,
    region: str = "r",
    gpu_type: str = "H100",
    nvlink_domain_size: int | None = None,
    prefix: str | None = None,
) -> list[Node]:
    """Nodes `<prefix>-k<rack>-n<i>` (prefix defaults to the region), racks `<prefix>/k<rack>`."""
    p = prefix if prefix is not None else region
    out: list[Node] = []
    for k in range(racks):
        for i in range(nodes_per_rack):
            domain = ""
            if nvlink_domain_size:
                domain = f"{p}/k{k}/d{i // nvlink_domain_size}"
            out.append(
                node(
                    f"{p}-k{k}-n{i}",
                    region=region,
                    rack=f"{p}/k{k}",
                    gpus=gpus,
                    gpu_type=gpu_type,
                    nvlink=domain,
                )
            )
    return out


class QueueBuilder:
    def __init__(self, name: str) -> None:
        self._fields: dict[str, Any] = {"name": name, "quota": {}}

    def quota(self, **per_type: int) -> QueueBuilder:
        self._fields["quota"] = {**self._fields["quota"], **per_type}
        return self

    def cohort(self, name: str | None) -> QueueBuilder:
        self._fields["cohort"] = name
        return self

    def borrowing_limit(self, gpus: int | None) -> QueueBuilder:
        self._fields["borrowing_limit"] = gpus
        return self

    def lending_limit(self, gpus: int | None) -> QueueBuilder:
        self._fields["lending_limit"] = gpus
        return self

    def weight(self, w: float) -> QueueBuilder:
        self._fields["weight"] = w
        return self

    def build(self) -> Queue:
        return Queue(**self._fields)


def queue(name: str) -> QueueBuilder:
    return QueueBuilder(name)


UNLIMITED = 1_000_000
"""The quota of the default queues: quota never limits them."""

NodeGpus = str | tuple[str, Sequence[int]]


def alloc(*parts: NodeGpus, gpus: int = 8) -> Allocation:
    """An Allocation: a node id takes GPUs 0..gpus-1; (node, indices) takes those indices."""
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(NodeAllocation(node=part, gpus=tuple(range(gpus))))
        else:
            out.append(NodeAllocation(node=part[0], gpus=tuple(part[1])))
    return Allocation(nodes=tuple(out))


def running(
    j: Job,
    allocation_nodes: Sequence[NodeGpus],
    started_at: float,
    *,
    on: Iterable[Node],
    checkpoint_interval_s: float | None = None,
    preempting: bool = False,
) -> RunningJob:
    """`j` running on `allocation_nodes` (node ids take GPUs 0..gpus_per_node-1) since `started_at`."""
    node_map = {n.id: n for n in on}
    allocation = alloc(*allocation_nodes, gpus=j.spec.gpus_per_node)
    first = node_map[allocation.nodes[0].node]
    state = JobState.PREEMPTING if preempting else JobState.RUNNING
    updated = j.model_copy(
        update={
            "state": state,
            "started_at": started_at,
            "first_started_at": j.first_started_at if j.first_started_at is not None else started_at,
        }
    )
    return RunningJob(updated, allocation, first.pool, started_at, checkpoint_interval_s)


def default_queues(nodes: Iterable[Node], jobs: Iterable[Job], names: Iterable[str] = ()) -> list[Queue]:
    """One queue per name, each with a quota larger than the cluster for every GPU type, no cohort."""
    totals = {n.gpu_type: UNLIMITED for n in nodes}
    wanted = set(names) | {j.spec.queue for j in jobs}
    return [Queue(name=q, quota=dict(totals)) for q in sorted(wanted)]


def snapshot(
    nodes: Sequence[Node],
    pending: Iterable[Job] = (),
    running: Iterable[RunningJob] = (),
    *,
    queues: Iterable[Queue] | None = None,
    config: PolicyConfig | None = None,
    priority_classes: Iterable[PriorityClass] = DEFAULT_PRIORITY_CLASSES,
    usage_history: Mapping[str, float] | None = None,
) -> ClusterSnapshot:
    """ClusterSnapshot.build with the policy's within-queue order (config defaults to corral)."""
    pending_list = list(pending)
    running_list = list(running)
    classes = tuple(priority_classes)
    if queues is None:
        queues = default_queues(nodes, [*pending_list, *(r.job for r in running_list)])
    cfg = config if config is not None else PolicyConfig()
    key = pending_key(cfg, {p.name: p.value for p in classes})
    return ClusterSnapshot.build(
        nodes,
        list(queues),
        classes,
        pending_list,
        running_list,
        usage_history=usage_history,
        pending_key=key,
    )


def cluster_config(
    nodes: Sequence[Node],
    queues: Sequence[Queue] | None = None,
    priority_classes: Sequence[PriorityClass] = DEFAULT_PRIORITY_CLASSES,
    queue_names: Iterable[str] = ("default",),
) -> ClusterConfig:
    """A ClusterConfig; without `queues`, the named queues each get the whole cluster as quota."""
    if queues is None:
        queues = default_queues(nodes, (), queue_names)
    return ClusterConfig(nodes=tuple(nodes), queues=tuple(queues), priority_classes=tuple(priority_classes))


# Re-exported for tests that want the wildcard without importing the model.
ANY_REGION = ANY


def run_bounded(sim: Simulator, max_cycles: int) -> RunResult:
    """Run a simulation, failing (not hanging) if it has not ended after `max_cycles` cycles."""
    cycles = 0

    def guard(_done: int, _total: int) -> None:
        nonlocal cycles
        cycles += 1
        if cycles > max_cycles:
            raise AssertionError(f"{sim.policy.name}: no end after {max_cycles} cycles")

    return sim.run(guard)
