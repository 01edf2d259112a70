"""Pending reasons with numbers, and Reject for what no node could ever hold."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scheduler.model.cluster import NodeState
from scheduler.model.job import Job, PendingCode
from scheduler.model.plan import Plan
from scheduler.model.snapshot import ClusterSnapshot, RunningJob
from scheduler.policy import explain
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from tests.builders import cluster, job, node, queue, running, snapshot

CN = cluster(racks=1, nodes_per_rack=2, region="cn-north")  # cn-north-k0-n0, -n1: 2 × 8 H100
EU_A100 = [node("eu-a", region="eu-west", rack="eu/a", gpu_type="A100")]
NODES = CN + EU_A100
N0, N1 = CN[0].id, CN[1].id
NO_PREEMPT = PolicyConfig(preemption=False, backfill=False)


def cn_job(job_id: str, gpus: int = 8, nodes: int = 1) -> Job:
    return job(job_id).region("cn-north").gpu_type("H100").gpus(gpus).nodes(nodes).submitted(0).build()


def cycle(pending: list[Job], busy: dict[str, tuple[int, ...]], **kw: object) -> Plan:
    held = [running(job(f"hold-{n}").gpus(len(g)).build(), [(n, g)], 0.0, on=NODES) for n, g in busy.items()]
    return decide(snapshot(NODES, pending, held, **kw), NO_PREEMPT, 10.0)  # type: ignore[arg-type]


def test_resources_with_numbers() -> None:
    plan = cycle([cn_job("j")], {N0: tuple(range(8)), N1: tuple(range(2))})
    reason = plan.reason_for("j")
    assert reason.code is PendingCode.RESOURCES
    assert reason.message == "Resources: needs 8 H100 in cn-north; 6 GPUs free, 0 nodes with 8 free"
    gang = cycle([cn_job("g", nodes=2)], {N0: tuple(range(8))}).reason_for("g")
    assert gang.message == "Resources: needs 2×8 H100 in cn-north; 8 GPUs free, 1 node with 8 free"


def test_topology_with_numbers() -> None:
    # 8 GPUs free, but 4 on each node: an 8-GPU job needs one whole node.
    plan = cycle([cn_job("j")], {N0: (0, 1, 2, 3), N1: (0, 1, 2, 3)})
    reason = plan.reason_for("j")
    assert reason.code is PendingCode.TOPOLOGY
    assert reason.detail == "needs 8 H100 in cn-north; 8 GPUs free but only 0 nodes with 8 free"


def test_quota_exceeded_with_numbers() -> None:
    queues = [queue("default").quota(H100=8).build()]
    plan = cycle([cn_job("j")], {N0: tuple(range(8))}, queues=queues)
    reason = plan.reason_for("j")
    assert reason.code is PendingCode.QUOTA_EXCEEDED
    assert reason.detail == "queue default uses 8/8 H100, no cohort"


def test_gpu_type_unavailable_is_rejected() -> None:
    plan = cycle([job("b200").gpu_type("B200").gpus(8).build()], {})
    assert [(r.job_id, r.reason) for r in plan.rejects] == [
        ("b200", "GpuTypeUnavailable: the cluster has no B200 nodes")
    ]
    # The type exists, but not in the job's region.
    plan = cycle([job("a").gpu_type("A100").region("cn-north").gpus(8).build()], {})
    assert [r.reason for r in plan.rejects] == ["GpuTypeUnavailable: region cn-north has no A100 nodes"]


def test_region_capacity_is_rejected() -> None:
    plan = cycle([cn_job("big", nodes=3)], {})
    assert [(r.job_id, r.reason) for r in plan.rejects] == [
        ("big", "RegionCapacity: needs 3×8 H100 in cn-north; only 2 suitable nodes exist there")
    ]
    plan = cycle([job("mars").region("mars").gpus(1).build()], {})
    assert [r.reason for r in plan.rejects] == ["RegionCapacity: the cluster has no nodes in mars"]


def test_too_many_gpus_per_node_is_rejected() -> None:
    plan = cycle([job("wide").gpus(16).build()], {})
    assert [r.reason for r in plan.rejects] == ["Topology: needs 16 GPUs per node; the largest node has 8"]


def test_region_capacity_counts_only_nodes_wide_enough() -> None:
    """A pool of one 8-GPU node and two 4-GPU nodes has 1 node that can hold 8 GPUs, not 3."""
    nodes = [node("big", gpus=8), node("small1", gpus=4), node("small2", gpus=4)]
    spec = job("j").gpus(8).nodes(2).spec()
    reason = explain.never_fits(snapshot(nodes), spec)
    assert reason is not None
    assert reason.code is PendingCode.REGION_CAPACITY
    assert reason.detail.startswith("needs 2×8 GPUs; only 1 suitable node"), reason.detail


def test_down_nodes_count_for_never_fits() -> None:
    # A node that is down now may come back: the job waits instead of being rejected.
    nodes = [CN[0], CN[1].model_copy(update={"state": NodeState.DOWN})]
    plan = decide(snapshot(nodes, [cn_job("g", nodes=2)]), NO_PREEMPT, 0.0)
    assert plan.rejects == []
    assert plan.reason_for("g").code is PendingCode.RESOURCES


def test_unknown_queue_is_rejected() -> None:
    plan = decide(
        snapshot(NODES, [job("j").queue("nope").build()], queues=[queue("default").build()]), NO_PREEMPT, 0.0
    )
    assert [(r.job_id, r.reason) for r in plan.rejects] == [
        ("j", "QuotaExceeded: queue 'nope' does not exist")
    ]


def test_jobs_not_examined_wait_behind_others() -> None:
    many = [job(f"j{i}").gpus(8).submitted(i).build() for i in range(5)]
    cfg = PolicyConfig(scan_depth=2, preemption=False, backfill=False)
    plan = decide(snapshot(CN, many), cfg, 10.0)
    assert [p.job_id for p in plan.places] == ["j0", "j1"]
    assert plan.examined == 2
    assert plan.reason_for("j4").code is PendingCode.PRIORITY


def test_shape_words() -> None:
    assert explain.shape(job("a").gpus(4).spec()) == "4 GPUs"
    assert explain.shape(job("a").gpus(8).nodes(2).gpu_type("A100").region("eu").spec()) == "2×8 A100 in eu"
    assert explain.shape(job("a").gpus(1).spec()) == "1 GPU"
    assert explain.shape(job("a").gpus(1).gpu_type("H100").spec()) == "1 H100"


def test_one_of_a_kind_is_singular() -> None:
    plan = cycle([cn_job("j", gpus=2)], {N0: tuple(range(8)), N1: tuple(range(7))})
    assert plan.reason_for("j").detail == "needs 2 H100 in cn-north; 1 GPU free, 0 nodes with 2 free"
    one_node = [CN[0]]
    plan = decide(snapshot(one_node, [cn_job("g", nodes=2)]), NO_PREEMPT, 0.0)
    assert [r.reason for r in plan.rejects] == [
        "RegionCapacity: needs 2×8 H100 in cn-north; only 1 suitable node exists there"
    ]


@pytest.mark.parametrize(
    ("start", "text"),
    [
        (None, "holds 2 nodes until running jobs end (they have no time limits)"),
        (3640.0, "holds 2 nodes, starting in about 59 min when running jobs reach their time limits"),
        (100.0, "holds 2 nodes, starting when running jobs past their time limits have stopped"),
    ],
)
def test_a_reservation_speaks_in_durations(start: float | None, text: str) -> None:
    assert explain.reservation(2, start, now=100.0) == text


def test_a_reservation_for_another_job_never_names_it() -> None:
    assert explain.reserved_for_other(400.0, now=100.0) == (
        "fits, but the free nodes are reserved for an earlier job (starting in 5 min)"
    )
    assert explain.reserved_for_other(None, now=100.0) == (
        "fits, but the free nodes are reserved for an earlier job (until running jobs there end)"
    )
    assert explain.reserved_for_other(50.0, now=100.0).endswith("(starting now)")


def test_preempting_counts_and_rules() -> None:
    assert explain.preempting(["service", "service"]) == (
        "preempting 2 jobs (that ran longer); starts once they have exited"
    )
    assert explain.preempting(["reclaim,service", "priority"]) == (
        "preempting 2 jobs (of a lower priority; on quota its queue lent out; that ran longer); "
        "starts once they have exited"
    )


# --- a reason never names another job or another queue -----------------------------------------------
# Ids and names no word of a reason could contain by chance.
QUEUES = ("team-alpha", "team-beta", "team-gamma")


@st.composite
def worlds(draw: st.DrawFn) -> tuple[ClusterSnapshot, float]:
    nodes = cluster(racks=draw(st.integers(1, 2)), nodes_per_rack=draw(st.integers(1, 3)), region="rx")
    cohort = draw(st.sampled_from([None, "pool"]))
    queues = [
        queue(q).quota(H100=draw(st.sampled_from([0, 8, 16, 32]))).cohort(cohort).build() for q in QUEUES
    ]
    now = 100_000.0
    capacity = {n.id: list(range(n.gpus)) for n in nodes}
    held = []
    for i in range(draw(st.integers(0, 8))):
        node_id = draw(st.sampled_from(sorted(capacity)))
        free = capacity[node_id]
        gpus = draw(st.sampled_from([1, 2, 4, 8]))
        if len(free) < gpus:
            continue
        taken, capacity[node_id] = free[:gpus], free[gpus:]
        j = (
            job(f"run-{i}-zq")
            .queue(draw(st.sampled_from(QUEUES)))
            .priority(draw(st.sampled_from(["low", "normal"])))
            .gpus(gpus)
            .time_limit(draw(st.sampled_from([None, 3600.0, 7 * 86400.0])))
            .preemptible(draw(st.booleans()))
            .submitted(0)
            .build()
        )
        started = now - draw(st.sampled_from([10.0, 5000.0, 90_000.0]))
        r = running(j, [(node_id, taken)], started, on=nodes, preempting=draw(st.booleans()))
        if draw(st.booleans()):
            r = RunningJob(r.job, r.allocation.model_copy(update={"borrowed_gpus": gpus}), r.pool, started)
        held.append(r)
    waiting = [
        job(f"wait-{i}-zq")
        .queue(draw(st.sampled_from(QUEUES)))
        .priority(draw(st.sampled_from(["low", "normal", "high"])))
        .gpus(draw(st.sampled_from([1, 4, 8])))
        .nodes(draw(st.sampled_from([1, 1, 2, 4])))
        .time_limit(draw(st.sampled_from([None, 600.0])))
        .submitted(now - draw(st.sampled_from([1.0, 50_000.0])))
        .build()
        for i in range(draw(st.integers(1, 10)))
    ]
    return snapshot(nodes, waiting, held, queues=queues), now


@settings(max_examples=150, deadline=None)
@given(world=worlds(), reserve_after=st.sampled_from([0.0, 3600.0]))
def test_no_reason_names_another_job_or_queue(
    world: tuple[ClusterSnapshot, float], reserve_after: float
) -> None:
    snap, now = world
    plan = decide(snap, PolicyConfig(reserve_unbounded_after_s=reserve_after), now)
    jobs = {j.id: j for q in snap.pending.values() for j in q}
    ids = [*jobs, *snap.running]
    said = {job_id: reason.message for job_id, reason in plan.pending.items()}
    said |= {r.job_id: r.reason for r in plan.rejects}
    assume(said)  # an example where every job started says nothing to check
    for job_id, text in said.items():
        own_queue = jobs[job_id].spec.queue
        others = [i for i in ids if i != job_id] + [q for q in QUEUES if q != own_queue]
        named = [o for o in others if re.search(rf"\b{re.escape(o)}\b", text)]
        assert not named, f"{job_id}: {text!r} names {named}"
        assert not re.search(r"t=\d", text), f"{job_id}: {text!r} shows a raw time"
    assert all(p.rule for p in plan.preempts)
