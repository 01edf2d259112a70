"""Free GPUs per node, indexed by pool and rack, as a persistent (copy-on-write) value.

`allocate` and `release` return a new index and share everything they did not touch, so a
scheduling cycle can try "what if" placements on scratch copies without ever changing the
snapshot it was given (Kueue's SimulateUsageAddition, without the undo).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Final

from scheduler.model.cluster import Node, PoolKey
from scheduler.model.plan import Allocation, NodeAllocation


class RackFree:
    """Free GPU indices of each schedulable node in one rack of one pool.

    Immutable: its fields are Final (mypy rejects any assignment after __init__). A plain class
    rather than a frozen dataclass, as PoolFree below and preempt.Candidate: a cycle builds many,
    and a frozen dataclass's generated __init__ (object.__setattr__ per field, interpreted even in
    the compiled build) cost about 10% of a replay (README, "The compiled build").
    """

    __slots__ = ("eligible_at", "free")
    free: Final[Mapping[str, tuple[int, ...]]]
    eligible_at: Final[tuple[int, ...]]  # eligible_at[g] = nodes with ≥ g free GPUs (index 0 = all nodes)

    def __init__(self, free: Mapping[str, tuple[int, ...]], eligible_at: tuple[int, ...]) -> None:
        self.free = free
        self.eligible_at = eligible_at

    def eligible(self, gpus_per_node: int) -> int:
        if gpus_per_node >= len(self.eligible_at):
            return 0
        return self.eligible_at[gpus_per_node]

    @property
    def free_gpus(self) -> int:
        return sum(len(f) for f in self.free.values())


def _rack(free: Mapping[str, tuple[int, ...]], max_gpus: int) -> RackFree:
    counts = [0] * (max_gpus + 2)
    for gpus in free.values():
        counts[len(gpus)] += 1
    eligible = [0] * (max_gpus + 1)
    running = 0
    for g in range(max_gpus, -1, -1):
        running += counts[g]
        eligible[g] = running
    return RackFree(free=free, eligible_at=tuple(eligible))


class PoolFree:
    """The racks of one pool, with its free GPUs and eligible_at summed over them (immutable, as
    RackFree)."""

    __slots__ = ("eligible_at", "free_gpus", "racks")
    racks: Final[Mapping[str, RackFree]]
    free_gpus: Final[int]
    eligible_at: Final[tuple[int, ...]]

    def __init__(self, racks: Mapping[str, RackFree], free_gpus: int, eligible_at: tuple[int, ...]) -> None:
        self.racks = racks
        self.free_gpus = free_gpus
        self.eligible_at = eligible_at

    def eligible(self, gpus_per_node: int) -> int:
        if gpus_per_node >= len(self.eligible_at):
            return 0
        return self.eligible_at[gpus_per_node]


def _pool(racks: Mapping[str, RackFree], max_gpus: int, free_gpus: int) -> PoolFree:
    eligible = [0] * (max_gpus + 1)
    for rack in racks.values():
        for g, n in enumerate(rack.eligible_at):
            eligible[g] += n
    return PoolFree(racks=racks, free_gpus=free_gpus, eligible_at=tuple(eligible))


class CapacityError(ValueError):
    """An allocation touched a GPU that is not free (would give one GPU to two jobs)."""


class CapacityIndex:
    """Free GPUs of all schedulable nodes. Immutable: every change returns a new index."""

    __slots__ = ("_free_total", "_location", "_max_gpus", "_nodes", "_pools")

    def __init__(
        self,
        nodes: Mapping[str, Node],
        pools: Mapping[PoolKey, PoolFree],
        location: Mapping[str, tuple[PoolKey, str]],
        max_gpus: int,
        free_total: int | None = None,
    ) -> None:
        self._nodes = nodes
        self._pools = pools
        self._location = location
        self._max_gpus = max_gpus
        self._free_total = sum(p.free_gpus for p in pools.values()) if free_total is None else free_total

    @classmethod
    def build(cls, nodes: Iterable[Node], allocations: Iterable[Allocation] = ()) -> CapacityIndex:
        """Index of the schedulable nodes with the GPUs of `allocations` taken out."""
        node_map = {n.id: n for n in nodes}
        taken: dict[str, set[int]] = {}
        for alloc in allocations:
            for na in alloc.nodes:
                held = taken.setdefault(na.node, set())
                for g in na.gpus:
                    if g in held:
                        raise CapacityError(f"GPU {g} of node {na.node} is held by two jobs")
                    held.add(g)
        max_gpus = max((n.gpus for n in node_map.values()), default=8)
        grouped: dict[PoolKey, dict[str, dict[str, tuple[int, ...]]]] = {}
        location: dict[str, tuple[PoolKey, str]] = {}
        for node in node_map.values():
            if not node.schedulable:
                continue
            held = taken.get(node.id, set())
            free = tuple(i for i in range(node.gpus) if i not in held)
            grouped.setdefault(node.pool, {}).setdefault(node.rack, {})[node.id] = free
            location[node.id] = (node.pool, node.rack)
        pools: dict[PoolKey, PoolFree] = {}
        for key, racks in grouped.items():
            rack_free = {rid: _rack(free, max_gpus) for rid, free in racks.items()}
            total = sum(len(g) for r in racks.values() for g in r.values())
            pools[key] = _pool(rack_free, max_gpus, total)
        return cls(node_map, pools, location, max_gpus)

    # --- queries -------------------------------------------------------------------------
    @property
    def nodes(self) -> Mapping[str, Node]:
        return self._nodes

    @property
    def pools(self) -> Mapping[PoolKey, PoolFree]:
        return self._pools

    @property
    def max_gpus_per_node(self) -> int:
        return self._max_gpus

    def pool(self, key: PoolKey) -> PoolFree | None:
        return self._pools.get(key)

    def pool_of(self, node_id: str) -> PoolKey | None:
        """The pool of a schedulable node (None for a node outside the index)."""
        loc = self._location.get(node_id)
        return None if loc is None else loc[0]

    def free_on(self, node_id: str) -> tuple[int, ...]:
        loc = self._location.get(node_id)
        if loc is None:
            return ()
        return self._pools[loc[0]].racks[loc[1]].free.get(node_id, ())

    def free_gpus(self) -> int:
        return self._free_total

    def iter_free(self) -> Iterator[tuple[str, tuple[int, ...]]]:
        for pool in self._pools.values():
            for rack in pool.racks.values():
                yield from rack.free.items()

    # --- changes (each returns a new index) ------------------------------------------------
    def allocate(self, allocation: Allocation) -> CapacityIndex:
        return self._apply(allocation, take=True)

    def release(self, allocation: Allocation) -> CapacityIndex:
        return self._apply(allocation, take=False)

    def without_nodes(self, node_ids: Iterable[str]) -> CapacityIndex:
        """The index with the given nodes' free GPUs hidden (e.g. nodes held by a reservation)."""
        hide = Allocation(
            nodes=tuple(NodeAllocation(node=n, gpus=self.free_on(n)) for n in node_ids if self.free_on(n))
        )
        return self.allocate(hide) if hide.nodes else self

    def release_each(self, allocations: Iterable[Allocation]) -> CapacityIndex:
        """The index with each allocation released, skipping whole any that would free a GPU
        already free (its GPUs are counted free already): the same as releasing them one by one
        and skipping each that raises CapacityError, in one pass (the racks are copied once)."""
        edit = _Edit(self)
        for allocation in allocations:
            edit.change(allocation, take=False, strict=False)
        return edit.done()

    def _apply(self, allocation: Allocation, take: bool) -> CapacityIndex:
        edit = _Edit(self)
        edit.change(allocation, take, strict=True)
        return edit.done()


class _Edit:
    """New free GPUs for some nodes of an index, turned into a new index (sharing the rest) once."""

    __slots__ = ("_free", "_index")

    def __init__(self, index: CapacityIndex) -> None:
        self._index = index
        self._free: dict[str, tuple[int, ...]] = {}  # node → its free GPUs after the changes so far

    def _current(self, node: str, loc: tuple[PoolKey, str]) -> tuple[int, ...]:
        edited = self._free.get(node)
        if edited is not None:
            return edited
        return self._index._pools[loc[0]].racks[loc[1]].free[node]

    def change(self, allocation: Allocation, take: bool, strict: bool) -> bool:
        """Take or release the allocation's GPUs, all or none. Where that is not possible: raise
        CapacityError if `strict`, else change nothing and return False."""
        location = self._index._location
        staged: dict[str, tuple[int, ...]] = {}  # kept apart until all of it is possible
        for na in allocation.nodes:
            loc = location.get(na.node)
            if loc is None:
                if take:
                    raise CapacityError(f"node {na.node} is not schedulable")
                continue  # releasing GPUs of a node that left the index: nothing to give back
            current = staged.get(na.node)
            if current is None:
                current = self._current(na.node, loc)
            wanted = set(na.gpus)
            if take:
                missing = wanted.difference(current)
                if missing:
                    if not strict:
                        return False
                    raise CapacityError(f"GPUs {sorted(missing)} of node {na.node} are not free")
                staged[na.node] = tuple(g for g in current if g not in wanted)
            else:
                overlap = wanted.intersection(current)
                if overlap:
                    if not strict:
                        return False
                    raise CapacityError(f"GPUs {sorted(overlap)} of node {na.node} are already free")
                staged[na.node] = tuple(sorted(current + tuple(na.gpus)))
        self._free.update(staged)
        return True

    def done(self) -> CapacityIndex:
        index = self._index
        if not self._free:
            return index
        if len(self._free) == 1:
            return self._one_node_done()
        location = index._location
        by_rack: dict[tuple[PoolKey, str], list[str]] = {}
        for node in self._free:
            by_rack.setdefault(location[node], []).append(node)
        pools = dict(index._pools)
        racks_copied: dict[PoolKey, dict[str, RackFree]] = {}
        pool_eligible: dict[PoolKey, list[int]] = {}
        pool_delta: dict[PoolKey, int] = {}
        total_delta = 0
        for (pool_key, rack_id), nodes in by_rack.items():
            pool = index._pools[pool_key]
            rack = pool.racks[rack_id]
            free = dict(rack.free)
            eligible = list(rack.eligible_at)
            in_pool = pool_eligible.get(pool_key)
            if in_pool is None:
                in_pool = pool_eligible[pool_key] = list(pool.eligible_at)
            delta = 0
            for node in nodes:
                before, after = len(free[node]), len(self._free[node])
                free[node] = self._free[node]
                _shift_in_place(eligible, before, after)
                _shift_in_place(in_pool, before, after)
                delta += after - before
            racks = racks_copied.get(pool_key)
            if racks is None:
                racks = racks_copied[pool_key] = dict(pool.racks)
            racks[rack_id] = RackFree(free=free, eligible_at=tuple(eligible))
            pool_delta[pool_key] = pool_delta.get(pool_key, 0) + delta
            total_delta += delta
        for pool_key, racks in racks_copied.items():
            pool = index._pools[pool_key]
            pools[pool_key] = PoolFree(
                racks=racks,
                free_gpus=pool.free_gpus + pool_delta[pool_key],
                eligible_at=tuple(pool_eligible[pool_key]),
            )
        return CapacityIndex(index._nodes, pools, location, index._max_gpus, index._free_total + total_delta)

    def _one_node_done(self) -> CapacityIndex:
        """done() for one changed node (most changes: a job on one node): only its rack and pool
        are rebuilt, without the grouping the general case needs."""
        index = self._index
        ((node, remaining),) = self._free.items()
        pool_key, rack_id = index._location[node]
        pool = index._pools[pool_key]
        rack = pool.racks[rack_id]
        before, after = len(rack.free[node]), len(remaining)
        free = dict(rack.free)
        free[node] = remaining
        racks = dict(pool.racks)
        racks[rack_id] = RackFree(free=free, eligible_at=_shifted(rack.eligible_at, before, after))
        pools = dict(index._pools)
        pools[pool_key] = PoolFree(
            racks=racks,
            free_gpus=pool.free_gpus + after - before,
            eligible_at=_shifted(pool.eligible_at, before, after),
        )
        return CapacityIndex(
            index._nodes, pools, index._location, index._max_gpus, index._free_total + after - before
        )


def _shifted(eligible_at: tuple[int, ...], before: int, after: int) -> tuple[int, ...]:
    shifted = list(eligible_at)
    _shift_in_place(shifted, before, after)
    return tuple(shifted)


def _shift_in_place(eligible_at: list[int], before: int, after: int) -> None:
    """eligible_at after one node's free count went from `before` to `after`."""
    step = 1 if after > before else -1
    for g in range(min(before, after) + 1, max(before, after) + 1):
        eligible_at[g] += step
