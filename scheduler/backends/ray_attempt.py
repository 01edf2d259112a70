"""One attempt of a job on Ray, in names and words: what its placement group and actors are called,
the environment of each rank, and why an attempt could not start or ended."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from scheduler.model.cluster import Node
from scheduler.model.job import Job

PG_NAME = re.compile(r"^corral-(?P<job>.+)-(?P<attempt>\d+)$")
ACTOR_NAME = re.compile(r"^corral-(?P<job>.+)-(?P<attempt>\d+)-r(?P<rank>\d+)$")


def pg_name(job_id: str, attempt: int) -> str:
    return f"corral-{job_id}-{attempt}"


def actor_name(job_id: str, attempt: int, rank: int) -> str:
    return f"corral-{job_id}-{attempt}-r{rank}"


def rank_env(
    job: Job, rank: int, node: str, gpus: int, master: tuple[str, int], checkpoint_dir: str
) -> dict[str, str]:
    """The environment of one rank: the job's env plus the torchrun-style and Corral variables.

    One process is launched per node, so LOCAL_WORLD_SIZE is 1 and LOCAL_RANK 0 (torchrun's
    convention: processes per node); the node's GPU count is in CORRAL_GPUS_PER_NODE.
    """
    array: dict[str, str] = {}
    if job.array_id is not None and job.array_index is not None:
        # A task of a job array (Slurm's SLURM_ARRAY_JOB_ID and SLURM_ARRAY_TASK_ID).
        array = {"CORRAL_ARRAY_JOB_ID": job.array_id, "CORRAL_ARRAY_INDEX": str(job.array_index)}
    return {
        **job.spec.env,
        **array,
        "RANK": str(rank),
        "NODE_RANK": str(rank),
        "WORLD_SIZE": str(job.spec.nodes),
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": master[0],
        "MASTER_PORT": str(master[1]),
        "CORRAL_JOB_ID": job.id,
        "CORRAL_ATTEMPT": str(job.restart_count),
        "CORRAL_RESTART_COUNT": str(job.restart_count),
        "CORRAL_CHECKPOINT_DIR": checkpoint_dir,
        "CORRAL_NODE": node,
        "CORRAL_GPUS_PER_NODE": str(gpus),
    }


def unplaced(
    pg: str,
    timeout_s: float,
    bundles: Sequence[tuple[str, int]],
    nodes: Mapping[str, Node],
    free: Mapping[str, float],
) -> tuple[str, str]:
    """Why placement group `pg` of (node, GPUs) bundles was not ready in time, and the node blamed:
    the first one that cannot take its bundle (gone from Ray, or too few GPUs free there by Ray's
    count); for a one-node job, its node even with GPUs free (it is the only suspect: a node that
    places nothing); "" when none stands out (a gang is placed all at once or not at all)."""
    reasons: list[tuple[str, str]] = []
    for node_id, need in bundles:
        node = nodes.get(node_id)
        if node is None:
            reasons.append((node_id, "not in the Ray cluster"))
        elif free.get(node_id, 0.0) < need:
            reasons.append((node_id, f"{free.get(node_id, 0.0):g} of {node.gpus} GPUs free"))
    head = f"placement group {pg} not ready within {timeout_s:g} s"
    if len(reasons) == 1:
        node_id, reason = reasons[0]
        return f"{head} (bundles for node {node_id} unplaced: {reason})", node_id
    if reasons:
        names = ", ".join(n for n, _ in reasons)
        detail = "; ".join(f"{n}: {r}" for n, r in reasons)
        return f"{head} (bundles for nodes {names} unplaced: {detail})", reasons[0][0]
    if len(bundles) == 1:
        node_id, _ = bundles[0]
        return f"{head} (bundle for node {node_id} unplaced although its GPUs are free)", node_id
    return f"{head} (bundles for nodes {', '.join(n for n, _ in bundles)} unplaced)", ""


def rank_message(node_ids: Sequence[str], rank: int, message: str) -> str:
    """A rank's why, naming the rank and its node when the job has several."""
    if len(node_ids) > 1 and message:
        return f"rank {rank} on node {node_ids[rank]}: {message}"
    return message
