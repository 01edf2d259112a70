"""Step 3, place: gang placement on one pool, all-or-nothing, topology-aware and best-fit.

Preference for an n-node gang needing g GPUs per node:
  1. one rack (and inside it one NVLink domain when the nodes declare domains), choosing the
     rack that the gang fills most tightly, so that emptier racks stay whole for bigger gangs;
  2. otherwise the fewest racks, taking the racks with the most eligible nodes first.
Inside a rack the nodes with the fewest free GPUs that still fit go first (best fit): a node is
only broken when no partly used node can take the work — fragmentation is what starves big jobs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from scheduler.model.capacity import CapacityIndex, PoolFree, RackFree
from scheduler.model.cluster import ANY, Node, PoolKey
from scheduler.model.job import JobSpec
from scheduler.model.plan import Allocation, NodeAllocation


def candidate_pools(capacity: CapacityIndex, spec: JobSpec) -> list[PoolKey]:
    """Pools of the job's GPU type inside its data region (both may be 'any'), in a stable order."""
    region, gpu_type = spec.data_region, spec.gpu_type
    if region != ANY and gpu_type != ANY:
        key = PoolKey(region, gpu_type)
        return [key] if key in capacity.pools else []
    return sorted(
        k
        for k in capacity.pools
        if (region == ANY or k.region == region) and (gpu_type == ANY or k.gpu_type == gpu_type)
    )


def find_allocation(
    capacity: CapacityIndex, pool_key: PoolKey, nodes: int, gpus_per_node: int
) -> Allocation | None:
    """GPUs for the whole gang in one pool, or None if it does not fit now."""
    pool = capacity.pool(pool_key)
    if pool is None or pool.eligible(gpus_per_node) < nodes:
        return None
    if nodes == 1:
        return _single_node(pool, gpus_per_node)
    return _gang(pool, nodes, gpus_per_node, capacity.nodes)


def _single_node(pool: PoolFree, g: int) -> Allocation | None:
    # The tightest free count k ≥ g that some node has, then the first rack holding such a node.
    el = pool.eligible_at
    top = len(el) - 1
    for k in range(g, top + 1):
        exact = el[k] - (el[k + 1] if k < top else 0)
        if exact <= 0:
            continue
        for rack in pool.racks.values():
            rel = rack.eligible_at
            if rel[k] - (rel[k + 1] if k < top else 0) > 0:
                for node_id, free in rack.free.items():
                    if len(free) == k:
                        return Allocation(nodes=(NodeAllocation(node=node_id, gpus=free[:g]),))
    return None


def _gang(pool: PoolFree, n: int, g: int, nodes: Mapping[str, Node]) -> Allocation | None:
    best_rack: RackFree | None = None
    best_count = 0
    for rack in pool.racks.values():
        count = rack.eligible(g)
        if count >= n and (best_rack is None or count < best_count):
            best_rack, best_count = rack, count
            if count == n:
                break
    if best_rack is not None:
        chosen = _pick_in_rack(best_rack, n, g, nodes)
    else:
        chosen = []
        for rack in sorted(pool.racks.values(), key=lambda r: -r.eligible(g)):
            take = min(rack.eligible(g), n - len(chosen))
            if take <= 0:
                break
            chosen.extend(_best_fit(rack.free.items(), take, g))
    if len(chosen) < n:
        return None
    return Allocation(nodes=tuple(NodeAllocation(node=nid, gpus=free[:g]) for nid, free in chosen))


def _pick_in_rack(
    rack: RackFree, n: int, g: int, nodes: Mapping[str, Node]
) -> list[tuple[str, tuple[int, ...]]]:
    eligible = [(nid, free) for nid, free in rack.free.items() if len(free) >= g]
    domains: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for nid, free in eligible:
        domain = nodes[nid].nvlink_domain
        if domain:
            domains.setdefault(domain, []).append((nid, free))
    smallest: list[tuple[str, tuple[int, ...]]] | None = None
    for members in domains.values():
        if len(members) >= n and (smallest is None or len(members) < len(smallest)):
            smallest = members
    if smallest is not None:
        return _best_fit(smallest, n, g)
    return _best_fit(eligible, n, g)


def _best_fit(
    members: Iterable[tuple[str, tuple[int, ...]]], n: int, g: int
) -> list[tuple[str, tuple[int, ...]]]:
    fits = [(len(free), nid, free) for nid, free in members if len(free) >= g]
    fits.sort()
    return [(nid, free) for _, nid, free in fits[:n]]


def residency_check(spec: JobSpec, allocation: Allocation, nodes: Mapping[str, Node]) -> str:
    """The audit line for a placement; raises if any node lies outside the job's data region."""
    regions = sorted({nodes[na.node].region for na in allocation.nodes})
    if spec.data_region == ANY:
        return f"data_region=any; nodes in {','.join(regions)}"
    outside = [na.node for na in allocation.nodes if nodes[na.node].region != spec.data_region]
    if outside:
        raise ResidencyViolation(f"nodes {outside} are outside data region {spec.data_region}")
    return f"data_region={spec.data_region}; all {len(allocation.nodes)} nodes in {spec.data_region}: pass"


class ResidencyViolation(Exception):
    """A placement would move a job's data out of its region: a bug, never a decision."""
