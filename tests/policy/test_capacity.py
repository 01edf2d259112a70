"""CapacityIndex: persistent allocate/release, double allocation, eligible counts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model.capacity import CapacityError, CapacityIndex
from scheduler.model.cluster import NodeState, PoolKey
from scheduler.model.plan import Allocation
from tests.builders import alloc, cluster, node

POOL = PoolKey("r", "H100")


def two_nodes() -> CapacityIndex:
    return CapacityIndex.build([node("a"), node("b")])


def test_allocate_returns_a_new_index_and_leaves_the_old_one_unchanged() -> None:
    old = two_nodes()
    new = old.allocate(alloc(("a", (0, 1, 2))))
    assert new.free_on("a") == (3, 4, 5, 6, 7)
    assert new.free_gpus() == 13
    # The old index still sees everything free.
    assert old.free_on("a") == tuple(range(8))
    assert old.free_gpus() == 16
    assert old.pools[POOL].free_gpus == 16
    assert old.pools[POOL].eligible(8) == 2
    assert new.pools[POOL].free_gpus == 13
    assert new.pools[POOL].eligible(8) == 1
    assert new.pools[POOL].eligible(5) == 2
    assert new.pools[POOL].eligible(6) == 1


def test_release_returns_a_new_index_and_leaves_the_old_one_unchanged() -> None:
    used = two_nodes().allocate(alloc("a"))
    freed = used.release(alloc(("a", (6, 7))))
    assert freed.free_on("a") == (6, 7)
    assert used.free_on("a") == ()
    assert used.free_gpus() == 8
    assert freed.free_gpus() == 10
    # Releasing the rest gives back the pristine index.
    full = freed.release(alloc(("a", range(6))))
    assert full.free_on("a") == tuple(range(8))
    assert full.pools[POOL].eligible_at == two_nodes().pools[POOL].eligible_at


def test_untouched_pools_and_racks_are_shared() -> None:
    nodes = [node("a", rack="k0"), node("b", rack="k1"), node("c", region="eu", rack="k2")]
    old = CapacityIndex.build(nodes)
    new = old.allocate(alloc(("a", (0,))))
    assert new.pools[PoolKey("eu", "H100")] is old.pools[PoolKey("eu", "H100")]
    assert new.pools[POOL].racks["k1"] is old.pools[POOL].racks["k1"]
    assert new.pools[POOL].racks["k0"] is not old.pools[POOL].racks["k0"]


def test_double_allocation_raises() -> None:
    index = two_nodes().allocate(alloc(("a", (0, 1))))
    with pytest.raises(CapacityError, match=r"GPUs \[1\] of node a are not free"):
        index.allocate(alloc(("a", (1, 2))))
    with pytest.raises(CapacityError):
        index.allocate(alloc(("a", (0, 1))))


def test_build_rejects_two_allocations_of_one_gpu() -> None:
    with pytest.raises(CapacityError, match="held by two jobs"):
        CapacityIndex.build([node("a")], [alloc(("a", (0, 1))), alloc(("a", (1,)))])


def test_releasing_free_gpus_raises() -> None:
    with pytest.raises(CapacityError, match="already free"):
        two_nodes().release(alloc(("a", (0,))))


def test_unschedulable_nodes_are_not_indexed() -> None:
    index = CapacityIndex.build(
        [node("a"), node("d", state=NodeState.DRAINING), node("x", state=NodeState.DOWN)]
    )
    assert index.free_gpus() == 8
    assert index.free_on("d") == ()
    with pytest.raises(CapacityError, match="not schedulable"):
        index.allocate(alloc(("d", (0,))))
    # Releasing GPUs of a node that left the index is a no-op (the node went down with its jobs).
    assert index.release(alloc(("x", (0,)))).free_gpus() == 8


def test_allocations_of_running_jobs_are_taken_out_at_build() -> None:
    index = CapacityIndex.build(
        [node("a"), node("b", gpus=4)], [alloc(("a", (0, 1, 2, 3, 4))), alloc(("b", (3,)))]
    )
    assert index.free_on("a") == (5, 6, 7)
    assert index.free_on("b") == (0, 1, 2)
    assert index.free_gpus() == 6


def test_eligible_counts_per_rack_and_pool() -> None:
    nodes = cluster(racks=2, nodes_per_rack=3)  # r-k0-n0..2 in r/k0, r-k1-n0..2 in r/k1
    index = CapacityIndex.build(nodes).allocate(
        Allocation(
            nodes=(
                *alloc(("r-k0-n0", range(8))).nodes,  # 0 free
                *alloc(("r-k0-n1", range(4))).nodes,  # 4 free
                *alloc(("r-k1-n0", range(7))).nodes,  # 1 free
            )
        )
    )
    pool = index.pools[POOL]
    k0, k1 = pool.racks["r/k0"], pool.racks["r/k1"]
    # k0: free 0, 4, 8 ; k1: free 1, 8, 8
    assert [k0.eligible(g) for g in range(10)] == [3, 2, 2, 2, 2, 1, 1, 1, 1, 0]
    assert [k1.eligible(g) for g in range(10)] == [3, 3, 2, 2, 2, 2, 2, 2, 2, 0]
    assert [pool.eligible(g) for g in range(10)] == [6, 5, 4, 4, 4, 3, 3, 3, 3, 0]
    assert k0.free_gpus == 12 and k1.free_gpus == 17 and pool.free_gpus == 29


def test_without_nodes_hides_free_gpus() -> None:
    index = two_nodes().allocate(alloc(("a", (0,))))
    hidden = index.without_nodes(["a"])
    assert hidden.free_on("a") == ()
    assert hidden.free_gpus() == 8
    assert index.free_on("a") == tuple(range(1, 8))


def _rebuilt_eligible(index: CapacityIndex) -> dict[str, tuple[int, ...]]:
    """eligible_at of each rack recomputed from the free lists."""
    out = {}
    top = index.max_gpus_per_node
    for pool in index.pools.values():
        for rid, rack in pool.racks.items():
            out[rid] = tuple(sum(1 for f in rack.free.values() if len(f) >= g) for g in range(top + 1))
    return out


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.integers(0, 5), st.sets(st.integers(0, 7), min_size=1)),
        max_size=30,
    )
)
def test_incremental_counts_match_a_rebuild(ops: list[tuple[bool, int, set[int]]]) -> None:
    nodes = cluster(racks=2, nodes_per_rack=3)
    ids = [n.id for n in nodes]
    index = CapacityIndex.build(nodes)
    held: dict[str, set[int]] = {i: set() for i in ids}
    for take, which, gpus in ops:
        nid = ids[which]
        if take:
            gpus = gpus - held[nid]
            if not gpus:
                continue
            index = index.allocate(alloc((nid, sorted(gpus))))
            held[nid] |= gpus
        else:
            gpus = gpus & held[nid]
            if not gpus:
                continue
            index = index.release(alloc((nid, sorted(gpus))))
            held[nid] -= gpus
        rebuilt = CapacityIndex.build(nodes, [alloc((n, sorted(h))) for n, h in held.items() if h])
        for nid2 in ids:
            assert index.free_on(nid2) == rebuilt.free_on(nid2)
        assert index.free_gpus() == rebuilt.free_gpus()
        pool, fresh = index.pools[POOL], rebuilt.pools[POOL]
        assert pool.eligible_at == fresh.eligible_at
        assert pool.free_gpus == fresh.free_gpus
        assert {rid: r.eligible_at for rid, r in pool.racks.items()} == _rebuilt_eligible(index)


def _same_index(a: CapacityIndex, b: CapacityIndex, ids: list[str]) -> None:
    assert [a.free_on(n) for n in ids] == [b.free_on(n) for n in ids]
    assert a.free_gpus() == b.free_gpus()
    assert {k: (p.free_gpus, p.eligible_at) for k, p in a.pools.items()} == {
        k: (p.free_gpus, p.eligible_at) for k, p in b.pools.items()
    }
    assert {rid: r.eligible_at for p in a.pools.values() for rid, r in p.racks.items()} == _rebuilt_eligible(
        a
    )


# An allocation of up to 3 parts: (node, GPUs); node 6 is not in the index (it left the cluster).
parts = st.lists(st.tuples(st.integers(0, 6), st.sets(st.integers(0, 7), min_size=1)), min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(taken=st.lists(parts, max_size=6), released=st.lists(parts, max_size=8))
def test_release_each_is_releasing_one_by_one_skipping_conflicts(
    taken: list[list[tuple[int, set[int]]]], released: list[list[tuple[int, set[int]]]]
) -> None:
    nodes = cluster(racks=2, nodes_per_rack=3)
    ids = [n.id for n in nodes] + ["gone"]
    index = CapacityIndex.build(nodes)
    for allocation in taken:
        try:
            index = index.allocate(alloc(*[(ids[i], sorted(g)) for i, g in allocation if i < 6]))
        except CapacityError:
            continue
    allocations = [alloc(*[(ids[i], sorted(g)) for i, g in allocation]) for allocation in released]
    expected = index
    for allocation in allocations:
        try:
            expected = expected.release(allocation)
        except CapacityError:
            continue
    _same_index(index.release_each(allocations), expected, ids[:6])
