"""The Backend protocol: the one seam between decisions and the machines that carry them out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, runtime_checkable

from scheduler.model.cluster import Node
from scheduler.model.job import Job
from scheduler.model.plan import Allocation


class EventKind(str, Enum):
    STARTED = "started"
    EXITED = "exited"  # the job's processes ended by themselves (exit_code says how)
    STOPPED = "stopped"  # a stop() completed: the job's GPUs are free again
    TIMED_OUT = "timed_out"
    NODE_LOST = "node_lost"
    NODE_JOINED = "node_joined"
    START_FAILED = "start_failed"  # the start could not complete (e.g. a node left): requeue the job
    # An attempt a previous controller started could not be adopted: it stopped mid-start (ranks not
    # all launched) or the ranks vanished while nobody watched. Requeued at once: not the job's
    # failure, so not counted against its start retries (a job must not fail for failovers).
    START_INTERRUPTED = "start_interrupted"


@dataclass(frozen=True, slots=True)
class BackendEvent:
    kind: EventKind
    time: float
    job_id: str = ""
    attempt: int = 0  # the job's restart count when it was started: stale events are ignored
    exit_code: int | None = None
    node: str = ""
    message: str = ""  # why, in words: "command not found: /no/such/binary", "placement timed out ..."


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """Where a node's agent runs: its IP and host name (in KubeRay, a Ray node is a pod: the pod's IP
    and, by default, the pod's name)."""

    ip: str
    hostname: str = ""


@runtime_checkable
class Backend(Protocol):
    """What a controller or simulator needs from a cluster."""

    def nodes(self) -> Sequence[Node]:
        """All nodes with their current state."""
        ...

    def start(self, job: Job, allocation: Allocation) -> None:
        """Start all ranks of `job` on `allocation` (all-or-nothing)."""
        ...

    def stop(self, job: Job, grace_s: float) -> None:
        """Ask the job to stop (SIGTERM), then force it after `grace_s` seconds."""
        ...

    def poll(self) -> list[BackendEvent]:
        """Events since the last poll, oldest first."""
        ...


@runtime_checkable
class AddressedBackend(Backend, Protocol):
    """A Backend that says where each of its nodes runs (RayBackend), so that another source (the
    Kubernetes topology, scheduler/kube) can find the machine under it."""

    def node_addresses(self) -> Mapping[str, NodeAddress]:
        """Node id → its address, for the nodes `nodes()` returns."""
        ...
