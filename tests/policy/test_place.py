"""Step 3, place: best fit, gangs on one (tightest) rack, NVLink domains, fewest racks, filters."""

from __future__ import annotations

import pytest

from scheduler.model.capacity import CapacityIndex
from scheduler.model.cluster import Node, PoolKey
from scheduler.model.plan import Allocation
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from scheduler.policy.place import (
    ResidencyViolation,
    candidate_pools,
    find_allocation,
    residency_check,
)
from tests.builders import alloc, cluster, job, node, running, snapshot

POOL = PoolKey("r", "H100")


def used(nodes: list[Node], **taken: int) -> CapacityIndex:
    """An index where node `id` has its first `taken[id]` GPUs in use."""
    parts = [(n.id, tuple(range(taken[n.id]))) for n in nodes if taken.get(n.id)]
    return CapacityIndex.build(nodes, [alloc(p) for p in parts])


def racks_of(allocation: Allocation, nodes: list[Node]) -> set[str]:
    by_id = {n.id: n for n in nodes}
    return {by_id[i].rack for i in allocation.node_ids}


# --- single node: best fit -------------------------------------------------------------------
def test_single_node_best_fit_picks_the_tightest_node() -> None:
    nodes = [node("a"), node("b"), node("c")]
    index = used(nodes, a=0, b=5, c=3)  # free: a 8, b 3, c 5
    for want, expected in [(1, "b"), (3, "b"), (4, "c"), (5, "c"), (6, "a"), (8, "a")]:
        found = find_allocation(index, POOL, 1, want)
        assert found is not None
        assert found.node_ids == (expected,), want
        assert len(found.nodes[0].gpus) == want
    assert find_allocation(index.allocate(alloc("a")), POOL, 1, 6) is None


def test_single_node_takes_free_gpu_indices() -> None:
    nodes = [node("a")]
    index = CapacityIndex.build(nodes, [alloc(("a", (0, 2, 4)))])
    found = find_allocation(index, POOL, 1, 3)
    assert found is not None
    assert found.nodes[0].gpus == (1, 3, 5)


# --- gangs -------------------------------------------------------------------------------------
def test_gang_prefers_one_rack_and_the_tightest_rack() -> None:
    nodes = cluster(racks=2, nodes_per_rack=4)
    # k0 has 4 whole nodes; k1 has 2 whole nodes (two are busy).
    index = CapacityIndex.build(nodes, [alloc("r-k1-n0"), alloc("r-k1-n1")])
    two = find_allocation(index, POOL, 2, 8)
    assert two is not None
    assert set(two.node_ids) == {"r-k1-n2", "r-k1-n3"}  # k1 is filled exactly
    three = find_allocation(index, POOL, 3, 8)
    assert three is not None
    assert racks_of(three, nodes) == {"r/k0"}
    # 2 nodes × 4 GPUs: k1 has 2 eligible nodes, k0 has 4, so k1 is the tighter rack again.
    half = find_allocation(index, POOL, 2, 4)
    assert half is not None and racks_of(half, nodes) == {"r/k1"}


def test_gang_inside_a_rack_uses_best_fit_nodes() -> None:
    nodes = cluster(racks=1, nodes_per_rack=4)
    # free: n0 8, n1 2, n2 4, n3 5
    index = CapacityIndex.build(
        nodes, [alloc(("r-k0-n1", range(6))), alloc(("r-k0-n2", range(4))), alloc(("r-k0-n3", range(3)))]
    )
    found = find_allocation(index, POOL, 2, 4)
    assert found is not None
    assert set(found.node_ids) == {"r-k0-n2", "r-k0-n3"}
    assert all(len(na.gpus) == 4 for na in found.nodes)


def test_gang_prefers_one_nvlink_domain_over_best_fit() -> None:
    # Domains d0 = {n0, n1}, d1 = {n2, n3}. Best fit alone would take n0 and n2 (4 free each).
    nodes = cluster(racks=1, nodes_per_rack=4, nvlink_domain_size=2)
    index = CapacityIndex.build(nodes, [alloc(("r-k0-n0", range(4))), alloc(("r-k0-n2", range(4)))])
    found = find_allocation(index, POOL, 2, 4)
    assert found is not None
    by_id = {n.id: n for n in nodes}
    assert len({by_id[i].nvlink_domain for i in found.node_ids}) == 1


def test_gang_takes_the_smallest_nvlink_domain_that_holds_it() -> None:
    nodes = [
        node("a0", nvlink="big"),
        node("a1", nvlink="big"),
        node("a2", nvlink="big"),
        node("b0", nvlink="small"),
        node("b1", nvlink="small"),
    ]
    found = find_allocation(CapacityIndex.build(nodes), POOL, 2, 8)
    assert found is not None
    assert set(found.node_ids) == {"b0", "b1"}
    three = find_allocation(CapacityIndex.build(nodes), POOL, 3, 8)
    assert three is not None and set(three.node_ids) == {"a0", "a1", "a2"}


def test_gang_spans_the_fewest_racks_when_no_rack_holds_it() -> None:
    nodes = cluster(racks=3, nodes_per_rack=3)
    # Whole nodes: k0 3, k1 2, k2 1.
    index = CapacityIndex.build(nodes, [alloc("r-k1-n0"), alloc("r-k2-n0"), alloc("r-k2-n1")])
    four = find_allocation(index, POOL, 4, 8)
    assert four is not None
    assert racks_of(four, nodes) == {"r/k0", "r/k1"}
    six = find_allocation(index, POOL, 6, 8)
    assert six is not None and racks_of(six, nodes) == {"r/k0", "r/k1", "r/k2"}
    assert find_allocation(index, POOL, 7, 8) is None


def test_gang_needs_enough_whole_nodes() -> None:
    nodes = cluster(racks=1, nodes_per_rack=2)
    index = CapacityIndex.build(nodes, [alloc(("r-k0-n0", (0,)))])
    assert find_allocation(index, POOL, 2, 8) is None  # 15 GPUs free, but one node is broken
    found = find_allocation(index, POOL, 2, 7)
    assert found is not None and len(found.nodes) == 2


# --- filters -----------------------------------------------------------------------------------
MIXED = [
    node("cn-h", region="cn", gpu_type="H100"),
    node("cn-a", region="cn", gpu_type="A100"),
    node("eu-h", region="eu", gpu_type="H100"),
]


@pytest.mark.parametrize(
    ("region", "gpu_type", "pools"),
    [
        ("cn", "any", [PoolKey("cn", "A100"), PoolKey("cn", "H100")]),
        ("any", "H100", [PoolKey("cn", "H100"), PoolKey("eu", "H100")]),
        ("eu", "H100", [PoolKey("eu", "H100")]),
        ("eu", "A100", []),
        ("mars", "any", []),
        ("any", "any", [PoolKey("cn", "A100"), PoolKey("cn", "H100"), PoolKey("eu", "H100")]),
    ],
)
def test_candidate_pools_filter_region_and_gpu_type(region: str, gpu_type: str, pools: list[PoolKey]) -> None:
    spec = job("j").region(region).gpu_type(gpu_type).spec()
    assert candidate_pools(CapacityIndex.build(MIXED), spec) == pools


def test_decide_places_only_in_the_data_region_and_gpu_type() -> None:
    # cn's H100 node is busy; the eu H100 node is free but outside the job's region.
    busy = job("busy").gpus(8).region("cn").gpu_type("H100").build()
    pinned = job("pinned").gpus(8).region("cn").gpu_type("H100").submitted(1).build()
    a100 = job("a100").gpus(8).gpu_type("A100").submitted(2).build()
    snap = snapshot(MIXED, [pinned, a100], [running(busy, ["cn-h"], 0.0, on=MIXED)])
    plan = decide(snap, PolicyConfig(preemption=False), 10.0)
    placed = {p.job_id: p.allocation.node_ids for p in plan.places}
    assert placed == {"a100": ("cn-a",)}
    assert plan.reason_for("pinned").code.value == "Resources"
    # Anywhere: the eu node.
    free_any = job("free").gpus(8).gpu_type("H100").build()
    plan = decide(snapshot(MIXED, [free_any], [running(busy, ["cn-h"], 0.0, on=MIXED)]), PolicyConfig(), 10.0)
    assert [p.allocation.node_ids for p in plan.places] == [("eu-h",)]
    assert plan.places[0].residency.startswith("data_region=any")


def test_residency_check_passes_and_raises() -> None:
    by_id = {n.id: n for n in MIXED}
    cn = job("j").region("cn").spec()
    assert residency_check(cn, alloc("cn-h", "cn-a"), by_id) == "data_region=cn; all 2 nodes in cn: pass"
    with pytest.raises(ResidencyViolation, match=r"\['eu-h'\] are outside data region cn"):
        residency_check(cn, alloc("cn-h", "eu-h"), by_id)
    anywhere = job("k").spec()
    assert residency_check(anywhere, alloc("cn-h", "eu-h"), by_id) == "data_region=any; nodes in cn,eu"
