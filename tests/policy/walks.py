"""What the walk tests share (test_group_walk, test_las_stop, test_settled_stop): a small cluster,
random pending jobs, and a snapshot lent the simulator's pending shapes next to a plain one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from hypothesis import strategies as st

from scheduler.model.job import Job
from scheduler.model.pending_shapes import PendingShapes, Shape
from scheduler.model.snapshot import ClusterSnapshot, RunningJob
from scheduler.policy.config import PolicyConfig
from scheduler.policy.group_walk import Outcome
from scheduler.policy.order import las_level, order_signature, pending_key
from tests.builders import cluster, job, queue, running, snapshot

NODES = cluster(racks=1, nodes_per_rack=4)  # 32 GPUs
CONFIG = PolicyConfig(default_min_runtime_s=600.0)
QUEUES = [queue(q).quota(H100=12).cohort("c").build() for q in ("a", "b", "c")]
NOW = 100_000.0

pending_job = st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from([1, 2, 4, 8]),  # GPUs
    st.sampled_from([1, 1, 1, 2]),  # nodes (a 2-node job takes whole nodes)
    st.sampled_from(["low", "normal", "high"]),
    # waited: equal times (ties broken by id) and both sides of the 30-min unbounded threshold
    st.sampled_from([0.0, 10.0, 600.0, 1_799.0, 1_800.0, 1_801.0, 5_000.0, 20_000.0]) | st.floats(0, 20_000),
    st.sampled_from([0.0, 5_000.0, 50_000.0]),  # attained GPU-seconds: its service level
    st.sampled_from([None, 600.0, 7_200.0]),  # time limit
)


# Few shapes, so that a queue's jobs form long runs the walk passes over, cut by the other queues'.
narrow_job = st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from([1, 2]),
    st.sampled_from([1, 1, 1, 1, 2]),
    st.just("normal"),
    # the unbounded threshold (1,800 s) falls inside, and on it
    (st.integers(0, 3_000) | st.sampled_from([1_799, 1_800, 1_800, 1_801])).map(float),
    st.sampled_from([0.0, 0.0, 50_000.0]),
    st.just(None),
)


def pending_jobs(
    rows: list[tuple[str, int, int, str, float, float, float | None]], now: float = NOW
) -> list[Job]:
    out = []
    for i, (q, gpus, nodes, priority, age, attained, limit) in enumerate(rows):
        b = job(f"p{i:03d}").queue(q).priority(priority).nodes(nodes).submitted(now - age).attained(attained)
        b = b.gpus(8 if nodes > 1 else gpus)
        if limit is not None:
            b = b.time_limit(limit)
        out.append(b.build())
    return out


def shapes_of(
    snap: ClusterSnapshot, pending: list[Job], config: PolicyConfig, effects_only: bool = False
) -> PendingShapes:
    """The shapes as the simulator keeps them: each group in the queue's own order. Lent for an
    owner that reads every decision (`effects_only` False, so that a cycle's whole plan can be
    compared with a plain walk's), or only those that change its cluster, as the simulator does."""
    th = config.las_thresholds_gpu_s
    values = {name: pc.value for name, pc in snap.priority_classes.items()}
    shapes = PendingShapes(
        th,
        lambda a: las_level(a, th),
        pending_key(config, values),
        order_signature(config, values),
        effects_only=effects_only,
    )
    for j in pending:
        shapes.add(j)
    return shapes


def occupants(busy: int, ran: float) -> list[RunningJob]:
    return [
        running(
            job(f"r{i}").queue("abc"[i % 3]).priority("low").gpus(8).build(),
            [NODES[i].id],
            NOW - ran,
            on=NODES,
        )
        for i in range(busy)
    ]


def plain_and_lent(
    pending: list[Job], running_jobs: list[RunningJob], config: PolicyConfig, effects_only: bool = False
) -> tuple[ClusterSnapshot, ClusterSnapshot]:
    """The same snapshot twice: as the live controller builds it, and lent the pending shapes."""
    plain = snapshot(NODES, pending, running_jobs, queues=QUEUES, config=config)
    return plain, replace(plain, pending_shapes=shapes_of(plain, pending, config, effects_only))


class KnownSet:
    """group_walk.KnownOutcomes over what a test says is known: the (queue, shape, old) it learns
    one by one (or that `known` holds from the start), all forgotten at once as a cycle's decision
    does (a new epoch). Cells are shared and updated in place, as the cycle's are."""

    def __init__(self, known: Callable[[str, Shape, bool], bool] | None = None) -> None:
        self._epoch = 0
        self._cells: dict[tuple[str, Shape, bool], Outcome] = {}
        self._known = known

    def epoch(self) -> int:
        return self._epoch

    def keys_at(self) -> int:
        return 0  # a key's cell is kept for good

    def outcome(self, queue: str, shape: Shape, old: bool) -> Outcome:
        cell = self._cells.get((queue, shape, old))
        if cell is None:
            cell = self._cells[(queue, shape, old)] = Outcome()
            if self._known is not None and self._known(queue, shape, old):
                cell.epoch = self._epoch
        return cell

    def learn(self, queue: str, shape: Shape, old: bool) -> None:
        self.outcome(queue, shape, old).epoch = self._epoch

    def forget_all(self) -> None:
        self._epoch += 1
