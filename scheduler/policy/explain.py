"""Pending reasons with numbers: the answer to 'why is my job pending?'."""

from __future__ import annotations

from scheduler.model.capacity import CapacityIndex
from scheduler.model.cluster import ANY
from scheduler.model.job import JobSpec, PendingCode, PendingReason
from scheduler.model.snapshot import ClusterSnapshot
from scheduler.policy.place import candidate_pools
from scheduler.policy.quota import QuotaLedger


def shape(spec: JobSpec) -> str:
    gpu = spec.gpu_type if spec.gpu_type != ANY else "GPUs"
    where = f" in {spec.data_region}" if spec.data_region != ANY else ""
    if spec.nodes == 1:
        return f"{spec.gpus_per_node} {gpu}{where}"
    return f"{spec.nodes}×{spec.gpus_per_node} {gpu}{where}"


def never_fits(snapshot: ClusterSnapshot, spec: JobSpec) -> PendingReason | None:
    """A reason if no node of the cluster, in any state, could ever hold the job; else None."""
    pools = [
        k
        for k in snapshot.pool_shapes
        if (spec.data_region == ANY or k.region == spec.data_region)
        and (spec.gpu_type == ANY or k.gpu_type == spec.gpu_type)
    ]
    if not pools:
        if spec.gpu_type != ANY and not any(k.gpu_type == spec.gpu_type for k in snapshot.pool_shapes):
            return PendingReason(
                PendingCode.GPU_TYPE_UNAVAILABLE, f"the cluster has no {spec.gpu_type} nodes"
            )
        if spec.data_region != ANY and not any(k.region == spec.data_region for k in snapshot.pool_shapes):
            return PendingReason(
                PendingCode.REGION_CAPACITY, f"the cluster has no nodes in {spec.data_region}"
            )
        return PendingReason(
            PendingCode.GPU_TYPE_UNAVAILABLE, f"region {spec.data_region} has no {spec.gpu_type} nodes"
        )
    if any(snapshot.pool_shapes[k].can_ever_hold(spec.nodes, spec.gpus_per_node) for k in pools):
        return None
    most = max(
        snapshot.pool_shapes[k].nodes_by_min_gpus[
            min(spec.gpus_per_node, snapshot.pool_shapes[k].max_gpus_per_node)
        ]
        if spec.gpus_per_node <= snapshot.pool_shapes[k].max_gpus_per_node
        else 0
        for k in pools
    )
    widest = max(snapshot.pool_shapes[k].max_gpus_per_node for k in pools)
    if spec.gpus_per_node > widest:
        return PendingReason(
            PendingCode.TOPOLOGY, f"needs {spec.gpus_per_node} GPUs per node; the largest node has {widest}"
        )
    return PendingReason(
        PendingCode.REGION_CAPACITY, f"needs {shape(spec)}; only {most} suitable nodes exist there"
    )


def resources(capacity: CapacityIndex, spec: JobSpec) -> PendingReason:
    """Resources (not enough free GPUs) or Topology (enough GPUs, but not on whole enough nodes)."""
    pools = candidate_pools(capacity, spec)
    free = sum(capacity.pools[k].free_gpus for k in pools)
    nodes_ok = max((capacity.pools[k].eligible(spec.gpus_per_node) for k in pools), default=0)
    if free >= spec.gpus:
        return PendingReason(
            PendingCode.TOPOLOGY,
            f"needs {shape(spec)}; {free} GPUs free but only {nodes_ok} nodes with {spec.gpus_per_node} free",
        )
    unit = "node" if nodes_ok == 1 else "nodes"
    return PendingReason(
        PendingCode.RESOURCES,
        f"needs {shape(spec)}; {free} GPUs free, {nodes_ok} {unit} with {spec.gpus_per_node} free",
    )


def beyond_quota(snapshot: ClusterSnapshot, ledger: QuotaLedger, spec: JobSpec) -> PendingReason | None:
    """A reason if the job's queue could never be admitted it, even with every other queue idle."""
    if spec.queue not in snapshot.queues:
        return PendingReason(PendingCode.QUOTA_EXCEEDED, f"queue {spec.queue!r} does not exist")
    types = sorted(
        {
            k.gpu_type
            for k, shape_ in snapshot.pool_shapes.items()
            if (spec.data_region == ANY or k.region == spec.data_region)
            and (spec.gpu_type == ANY or k.gpu_type == spec.gpu_type)
            and shape_.can_ever_hold(spec.nodes, spec.gpus_per_node)
        }
    )
    ceilings = {t: ledger.ceiling(spec.queue, t) for t in types}
    if any(c >= spec.gpus for c in ceilings.values()):
        return None
    most = ", ".join(f"{c} {t}" for t, c in ceilings.items())
    return PendingReason(
        PendingCode.QUOTA_EXCEEDED,
        f"needs {spec.gpus} GPUs; queue {spec.queue} can never hold more than {most} "
        "(quota plus what its cohort can lend): ask for fewer GPUs or a bigger quota",
    )
