"""Whole cycles through decide(), table-driven, for every policy name."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from scheduler.model.cluster import Node
from scheduler.model.job import Job, PendingCode
from scheduler.model.snapshot import RunningJob
from scheduler.policy.config import POLICY_NAMES, PolicyConfig
from scheduler.policy.decide import decide
from tests.builders import cluster, job, node, queue, running, snapshot

ONE = cluster(racks=1, nodes_per_rack=1)  # r-k0-n0, 8 GPUs
TWO = cluster(racks=1, nodes_per_rack=2)


@dataclass(frozen=True)
class Expect:
    placed: tuple[str, ...] = ()  # in decision order
    preempted: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()
    reasons: dict[str, PendingCode] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str
    nodes: list[Node]
    pending: list[Job]
    running: list[RunningJob]
    now: float
    expect: dict[str, Expect]


def busy(
    nodes: list[Node], job_id: str, gpus: int, started: float = 0.0, priority: str = "normal"
) -> RunningJob:
    j = job(job_id).gpus(gpus).priority(priority).submitted(-10).build()
    return running(j, [(nodes[0].id, tuple(range(gpus)))], started, on=nodes, checkpoint_interval_s=1000.0)


HOL_PENDING = [
    job("A").gpus(8).submitted(0).runtime(100).build(),
    job("B").gpus(2).submitted(1).runtime(1000).build(),
]
SJF_PENDING = [
    job("j300").gpus(8).submitted(0).runtime(300).build(),
    job("j100").gpus(8).submitted(1).runtime(100).build(),
    job("j200").gpus(8).submitted(2).runtime(200).build(),
]
REJECT_PENDING = [
    job("huge").gpus(8).nodes(2).submitted(0).build(),
    job("ok").gpus(8).submitted(1).build(),
]

CASES = [
    # A 4-GPU job runs on the only node. A (8 GPUs) is first in line and does not fit; B (2) would.
    Case(
        "head_of_line",
        ONE,
        HOL_PENDING,
        [busy(ONE, "r", 4)],
        100.0,
        {
            "fifo": Expect(reasons={"A": PendingCode.RESOURCES, "B": PendingCode.PRIORITY}),
            "sjf": Expect(placed=("B",), reasons={"A": PendingCode.RESOURCES}),
            # r has no time limit and A waited < reserve_unbounded_after_s: no reservation, B runs.
            "corral": Expect(placed=("B",), reasons={"A": PendingCode.RESOURCES}),
            "las": Expect(placed=("B",)),
        },
    ),
    # Room for two of three 8-GPU jobs: SJF takes the shortest, the others take arrival order.
    Case(
        "sjf_order",
        TWO,
        SJF_PENDING,
        [],
        10.0,
        {
            "fifo": Expect(placed=("j300", "j100")),
            "sjf": Expect(placed=("j100", "j200")),
            "corral": Expect(placed=("j300", "j100")),
            "las": Expect(placed=("j300", "j100")),
        },
    ),
    # r has run 1000 s on 8 GPUs (8000 GPU-s, LAS level 1); p just arrived (level 0).
    Case(
        "las_preemption",
        ONE,
        [job("p").gpus(8).submitted(900).build()],
        [busy(ONE, "r", 8)],
        1000.0,
        {
            "fifo": Expect(reasons={"p": PendingCode.RESOURCES}),
            "sjf": Expect(),
            "corral": Expect(preempted=("r",), reasons={"p": PendingCode.RESERVED}),  # service preemption
            "las": Expect(preempted=("r",)),
        },
    ),
    # A low job has run 400 s (3200 GPU-s, level 0), within corral's 600 s minimum runtime.
    Case(
        "priority_preemption_too_early",
        ONE,
        [job("h").gpus(8).priority("high").submitted(300).build()],
        [busy(ONE, "low", 8, priority="low")],
        400.0,
        {
            "fifo": Expect(),
            "sjf": Expect(),
            "corral": Expect(),
            "las": Expect(),  # LAS ranks by attained service only; low arrived first
        },
    ),
    # Past its minimum runtime (650 s, 5200 GPU-s: service level 1), the low job yields.
    Case(
        "priority_preemption",
        ONE,
        [job("h").gpus(8).priority("high").submitted(300).build()],
        [busy(ONE, "low", 8, priority="low")],
        650.0,
        {
            "fifo": Expect(),
            "sjf": Expect(),
            "corral": Expect(preempted=("low",), reasons={"h": PendingCode.RESERVED}),
            "las": Expect(preempted=("low",)),  # now a level above the waiting job
        },
    ),
    # A job no node could ever hold is rejected and does not block the line, even in FIFO.
    Case(
        "reject",
        ONE,
        REJECT_PENDING,
        [],
        10.0,
        {name: Expect(placed=("ok",), rejected=("huge",)) for name in POLICY_NAMES},
    ),
]


@pytest.mark.parametrize("policy", POLICY_NAMES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cycle(case: Case, policy: str) -> None:
    config = PolicyConfig(name=policy)
    plan = decide(snapshot(case.nodes, case.pending, case.running, config=config), config, case.now)
    expect = case.expect[policy]
    assert tuple(p.job_id for p in plan.places) == expect.placed
    assert tuple(sorted(p.job_id for p in plan.preempts)) == expect.preempted
    assert tuple(r.job_id for r in plan.rejects) == expect.rejected
    for job_id, code in expect.reasons.items():
        assert plan.reason_for(job_id).code is code, plan.reason_for(job_id).message
    # Every placement is whole, in free GPUs, and recorded with its residency check.
    decided = {p.job_id for p in plan.places} | {r.job_id for r in plan.rejects}
    specs = {j.id: j.spec for j in case.pending}
    for p in plan.places:
        spec = specs[p.job_id]
        assert len(p.allocation.nodes) == spec.nodes
        assert all(len(na.gpus) == spec.gpus_per_node for na in p.allocation.nodes)
        assert p.residency
    for j in case.pending:
        if j.id not in decided:
            assert plan.reason_for(j.id).message


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_placements_in_one_cycle_never_share_a_gpu(policy: str) -> None:
    nodes = cluster(racks=2, nodes_per_rack=2, gpus=8)
    pending = [
        job(f"j{i}").gpus(g).nodes(n).submitted(i).build()
        for i, (g, n) in enumerate([(3, 1), (8, 2), (5, 1), (2, 1), (8, 1), (1, 1), (4, 2), (6, 1)])
    ]
    config = PolicyConfig(name=policy)
    plan = decide(snapshot(nodes, pending, config=config), config, 10.0)
    seen: set[tuple[str, int]] = set()
    for p in plan.places:
        for na in p.allocation.nodes:
            for g in na.gpus:
                assert (na.node, g) not in seen
                seen.add((na.node, g))
    assert len(seen) <= 32
    assert plan.places  # something fits on an idle cluster


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_a_gang_goes_to_the_pool_that_can_hold_it(policy: str) -> None:
    """Pool (g0, A100) has one 4-GPU node, pool (g1, A100) has two. A 2 × 2 gang fits only in g1.

    LAS gives the job to the first pool with 4 GPUs of budget (g0), then places it there only, so
    it waits for ever on an idle cluster (and the simulator never ends).
    """
    nodes = [
        node("g0-n0", region="g0", rack="g0/k0", gpu_type="A100", gpus=4),
        node("g1-n0", region="g1", rack="g1/k0", gpu_type="A100", gpus=4),
        node("g1-n1", region="g1", rack="g1/k0", gpu_type="A100", gpus=4),
    ]
    gang = job("gang").gpus(2).nodes(2).submitted(0).build()
    config = PolicyConfig(name=policy)
    plan = decide(snapshot(nodes, [gang], config=config), config, 10.0)
    assert [(p.job_id, sorted(p.allocation.node_ids)) for p in plan.places] == [("gang", ["g1-n0", "g1-n1"])]


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_a_job_of_any_gpu_type_goes_to_the_pool_its_quota_allows(policy: str) -> None:
    """The queue has H100 quota only; the job takes any GPU type. Pools sort A100 first.

    LAS commits the job to the A100 pool (budget only), where admission fails for ever.
    """
    nodes = [
        node("a100", rack="ka", gpu_type="A100", gpus=4),
        node("h100", rack="kh", gpu_type="H100", gpus=4),
    ]
    queues = [queue("q").quota(H100=24).build()]
    any_type = job("j").queue("q").gpus(1).submitted(0).build()
    config = PolicyConfig(name=policy)
    plan = decide(snapshot(nodes, [any_type], queues=queues, config=config), config, 10.0)
    assert [(p.job_id, p.allocation.node_ids) for p in plan.places] == [("j", ("h100",))]
