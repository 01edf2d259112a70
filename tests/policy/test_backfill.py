"""Step 4, backfill (EASY): the head job's reservation and which jobs may run in the holes."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from scheduler.model.capacity import CapacityIndex
from scheduler.model.cluster import PoolKey
from scheduler.model.job import Job, PendingCode
from scheduler.model.plan import Plan
from scheduler.model.snapshot import RunningJob
from scheduler.policy.backfill import ends_before, plan_reservation
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from tests.builders import NodeGpus, cluster, job, running, snapshot

POOL = PoolKey("r", "H100")
NODES = cluster(racks=1, nodes_per_rack=4)  # r-k0-n0 .. r-k0-n3, 8 GPUs each
N0, N1, N2, N3 = (n.id for n in NODES)
NO_PREEMPT = PolicyConfig(preemption=False)


def run(job_id: str, nodes: Sequence[NodeGpus], limit: float | None, gpus: int = 8) -> RunningJob:
    j = job(job_id).gpus(gpus).nodes(len(nodes)).time_limit(limit).submitted(-100).build()
    return running(j, nodes, 0.0, on=NODES)


# --- plan_reservation --------------------------------------------------------------------------
def test_reservation_starts_when_enough_running_jobs_reach_their_time_limits() -> None:
    jobs = [run("a", [N0], 1000), run("b", [N1], 500), run("c", [N2], 2000), run("d", [N3], 3000)]
    index = CapacityIndex.build(NODES, [r.allocation for r in jobs])
    one = plan_reservation(index, POOL, job("h").gpus(8).spec(), "h", jobs, now=100)
    assert one is not None
    assert (one.nodes, one.start) == (frozenset({N1}), 500)
    two = plan_reservation(index, POOL, job("h").gpus(8).nodes(2).spec(), "h", jobs, now=100)
    assert two is not None
    assert (two.nodes, two.start) == (frozenset({N0, N1}), 1000)
    # Overdue jobs (past their limit) end 'now' at the earliest.
    late = plan_reservation(index, POOL, job("h").gpus(8).spec(), "h", jobs, now=700)
    assert late is not None and late.start == 700


def test_reservation_counts_free_gpus_too() -> None:
    jobs = [run("a", [N0], 1000), run("b", [N1], 500)]
    index = CapacityIndex.build(NODES, [r.allocation for r in jobs])  # n2, n3 free
    three = plan_reservation(index, POOL, job("h").gpus(8).nodes(3).spec(), "h", jobs, now=0)
    assert three is not None
    assert three.start == 500 and three.nodes == frozenset({N1, N2, N3})


def test_unbounded_reservation() -> None:
    jobs = [run("a", [N0], None), run("b", [N1], 500), run("c", [N2], None), run("d", [N3], None)]
    index = CapacityIndex.build(NODES, [r.allocation for r in jobs])
    spec = job("h").gpus(8).nodes(2).spec()
    unbounded = plan_reservation(index, POOL, spec, "h", jobs, now=0)
    assert unbounded is not None and unbounded.start is None and N1 in unbounded.nodes
    assert plan_reservation(index, POOL, spec, "h", jobs, now=0, allow_unbounded=False) is None
    # Bounded when the jobs it waits for all have limits.
    assert (
        plan_reservation(index, POOL, job("h").gpus(8).spec(), "h", jobs, now=0, allow_unbounded=False)
        is not None
    )


def test_no_reservation_for_what_the_pool_cannot_hold() -> None:
    jobs = [run("a", [N0], 100)]
    index = CapacityIndex.build(NODES, [r.allocation for r in jobs])
    assert plan_reservation(index, POOL, job("h").gpus(8).nodes(5).spec(), "h", jobs, now=0) is None


@pytest.mark.parametrize(
    ("limit", "now", "start", "ok"),
    [(400, 100, 500, True), (401, 100, 500, False), (None, 100, 500, False), (10, 100, None, False)],
)
def test_ends_before(limit: float | None, now: float, start: float | None, ok: bool) -> None:
    assert ends_before(job("s").time_limit(limit).spec(), now, start) is ok


# --- EASY backfill in a cycle ------------------------------------------------------------------------
# n0: a (limit 1000), n1: b (limit 2000), n2: free, n3: c holds 4 GPUs with no limit (4 free).
# The head job h (2 × 8) cannot start; with a's end it fits on n0 + n2 at t=1000.
RUNNING = [
    run("a", [N0], 1000),
    run("b", [N1], 2000),
    run("c", [(N3, (0, 1, 2, 3))], None, gpus=4),
]


def head() -> Job:
    return job("h").gpus(8).nodes(2).submitted(0).build()


def cycle(*others: Job, now: float = 100.0, config: PolicyConfig = NO_PREEMPT) -> Plan:
    return decide(snapshot(NODES, [head(), *others], RUNNING), config, now)


def test_head_job_reserves_the_nodes_that_free_up_first() -> None:
    plan = cycle()
    assert [(r.job_id, r.nodes, r.start) for r in plan.reserves] == [("h", (N0, N2), 1000)]
    reason = plan.reason_for("h")
    assert reason.code is PendingCode.RESERVED
    # 900 s from now, in words; then the shortfall.
    assert reason.detail == (
        "holds 2 nodes, starting in about 15 min when running jobs reach their time limits; "
        "needs 2×8 GPUs; 12 GPUs free, 1 node with 8 free"
    )
    assert plan.places == []


@pytest.mark.parametrize(("limit", "placed"), [(500, True), (900, True), (901, False), (None, False)])
def test_short_job_backfills_on_reserved_nodes_only_if_it_ends_before_the_reservation(
    limit: float | None, placed: bool
) -> None:
    # At t=100 a job of limit ≤ 900 ends by t=1000; the only whole free node (n2) is reserved.
    short = job("s").gpus(8).time_limit(limit).submitted(10).build()
    plan = cycle(short)
    if placed:
        assert [(p.job_id, p.allocation.node_ids, p.backfilled) for p in plan.places] == [("s", (N2,), True)]
    else:
        assert plan.places == []
        assert plan.reason_for("s").code is not PendingCode.RESERVED  # it holds nothing


def test_long_job_uses_unreserved_nodes_only() -> None:
    # 4 GPUs fit on n3 (not reserved); a second long job of 4 GPUs would need n2 (reserved).
    long4 = job("l4").gpus(4).submitted(10).build()
    long4b = job("l4b").gpus(4).submitted(11).build()
    plan = cycle(long4, long4b)
    assert [(p.job_id, p.allocation.node_ids) for p in plan.places] == [("l4", (N3,))]
    assert plan.places[0].backfilled
    assert all(N2 not in p.allocation.node_ids for p in plan.places)


def test_a_job_blocked_only_by_a_reservation_is_not_told_it_lacks_resources() -> None:
    """A long 8-GPU job waits because n2 is reserved for h, not for lack of GPUs or whole nodes.

    Today it is told 'Topology: needs 8 GPUs; 12 GPUs free but only 1 nodes with 8 free', which
    contradicts itself (it needs one node and one node has 8 free). Slurm's word for 'the resources
    are held for a higher-priority job' is Priority; `Reserved` means the job itself holds a reservation.
    """
    long8 = job("l8").gpus(8).submitted(10).build()
    plan = cycle(long8)
    assert plan.places == []
    reason = plan.reason_for("l8")
    assert reason.code is PendingCode.PRIORITY, reason.message
    # h's reservation starts at t=1000, 900 s from now; h is never named (its team may differ).
    assert reason.detail == "fits, but the free nodes are reserved for an earlier job (starting in 15 min)"


def test_one_reservation_per_pool() -> None:
    second = job("h2").gpus(8).nodes(2).submitted(5).build()
    plan = cycle(second)
    assert [r.job_id for r in plan.reserves] == ["h"]


def test_unbounded_reservation_only_after_reserve_unbounded_after_s() -> None:
    # Every running job lacks a time limit: the reservation's start cannot be bounded.
    unbounded = [run("a", [N0], None), run("b", [N1], None), run("c", [(N3, (0, 1, 2, 3))], None, gpus=4)]
    long8 = job("l8").gpus(8).submitted(10).build()
    short = job("s").gpus(8).time_limit(60).submitted(20).build()
    cfg = PolicyConfig(preemption=False, reserve_unbounded_after_s=1800)
    # h waited 1000 s: no reservation, so the long job takes the free node.
    early = decide(snapshot(NODES, [head(), long8], unbounded), cfg, 1000.0)
    assert early.reserves == []
    assert [p.job_id for p in early.places] == ["l8"]
    # h waited 1800 s: it reserves (start None) and nothing without a bounded end may use it.
    late = decide(snapshot(NODES, [head(), long8, short], unbounded), cfg, 1800.0)
    assert [(r.job_id, r.start) for r in late.reserves] == [("h", None)]
    assert late.places == []
    assert late.reason_for("h").detail.startswith(
        "holds 2 nodes until running jobs end (they have no time limits); "
    )


def test_no_backfill_when_disabled() -> None:
    long8 = job("l8").gpus(8).submitted(10).build()
    plan = cycle(long8, config=PolicyConfig(preemption=False, backfill=False))
    assert plan.reserves == []
    assert [p.job_id for p in plan.places] == ["l8"]
    assert not plan.places[0].backfilled
