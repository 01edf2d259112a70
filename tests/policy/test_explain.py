"""Pending reasons with numbers, and Reject for what no node could ever hold."""

from __future__ import annotations

from scheduler.model.cluster import NodeState
from scheduler.model.job import Job, PendingCode
from scheduler.model.plan import Plan
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
