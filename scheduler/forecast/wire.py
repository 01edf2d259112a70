"""What `GET /v1/state` returns (scheduler/api/state_routes.py), read back as replay inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.model.cluster import Node
from scheduler.model.job import Job
from scheduler.model.plan import Allocation
from scheduler.model.queue import ClusterConfig
from scheduler.model.snapshot import RunningJob
from scheduler.policy.config import PolicyConfig
from scheduler.view import SchedulingState

__all__ = ["LiveState", "decode_state"]


class StateFormatError(ValueError):
    """A state the server sent that this CLI cannot read (another version)."""


@dataclass(frozen=True, slots=True)
class LiveState:
    state: SchedulingState
    cluster: ClusterConfig
    policy: PolicyConfig
    finished: Sequence[tuple[str, float]]  # (queue, runtime) of recently finished jobs, oldest first
    recent: Sequence[Job]  # jobs submitted in the window asked for, oldest first


def decode_state(data: Mapping[str, Any]) -> LiveState:
    if data.get("format") != 1:
        raise StateFormatError(
            f"unknown state format {data.get('format')!r}: upgrade the CLI to the server's"
        )
    nodes = [Node.model_validate(n) for n in data["nodes"]]
    by_id = {n.id: n for n in nodes}
    running = []
    for r in data["running"]:
        job = Job.model_validate(r["job"])
        allocation = Allocation.model_validate(r["allocation"])
        first = by_id[allocation.nodes[0].node]
        running.append(RunningJob(job, allocation, first.pool, float(r["started_at"])))
    state = SchedulingState(
        time=float(data["time"]),
        nodes=tuple(nodes),
        pending=tuple(Job.model_validate(j) for j in data["pending"]),
        running=tuple(running),
        usage={str(k): float(v) for k, v in data["usage"].items()},
    )
    return LiveState(
        state=state,
        cluster=ClusterConfig.model_validate(data["cluster"]),
        policy=PolicyConfig.model_validate(data["policy"]),
        finished=[(str(q), float(t)) for q, t in data["finished"]],
        recent=[Job.model_validate(j) for j in data["recent"]],
    )
