"""`corral sim --placement gpu-count`: replay as if GPUs were counted without node boundaries.

Some published simulators (Tiresias' `count` scheme, which its dlas-gpu results use) start a job
whenever enough GPUs are free anywhere in the cluster: a 16-GPU job may take one GPU on each of 16
nodes. Corral places gangs on whole nodes (`nodes × gpus_per_node`), so on the same input it sees
fragmentation the peer does not. To compare like with like, `gpu_count` rewrites the replay, not
the policy: every GPU becomes a node of its own (`<node>/g<i>`, same region, zone, rack, NVLink
domain and GPU type) and every job asks for `gpus` nodes of 1 GPU. Any `gpus` free GPUs then hold
the job, exactly as counting does, and every policy, invariant and report runs unchanged; only
node ids in `--events-out` are the per-GPU ones. It is an assumption for comparisons, never a
model of a real cluster: a real gang spread that way would pay for its network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from scheduler.model.queue import ClusterConfig
from scheduler.sim.records import TraceJob

Placement = Literal["nodes", "gpu-count"]
PLACEMENTS: tuple[Placement, ...] = ("nodes", "gpu-count")


def gpu_count(cluster: ClusterConfig, jobs: Sequence[TraceJob]) -> tuple[ClusterConfig, list[TraceJob]]:
    """The cluster with one node per GPU and the jobs as gangs of 1-GPU nodes (see the module doc)."""
    nodes = tuple(
        node.model_copy(update={"id": f"{node.id}/g{i}", "gpus": 1})
        for node in cluster.nodes
        for i in range(node.gpus)
    )
    out = [
        TraceJob(
            j.job_id,
            j.submit_time,
            j.duration,
            j.spec.model_copy(update={"nodes": j.spec.gpus, "gpus_per_node": 1}),
        )
        for j in jobs
    ]
    return cluster.model_copy(update={"nodes": nodes}), out


def apply_placement(
    placement: Placement, cluster: ClusterConfig, jobs: Sequence[TraceJob]
) -> tuple[ClusterConfig, list[TraceJob]]:
    """The replay's cluster and jobs under `placement` ("nodes": as given)."""
    if placement == "gpu-count":
        return gpu_count(cluster, jobs)
    return cluster, list(jobs)
