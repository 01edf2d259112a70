"""A real local Ray cluster for tests, without pytest: start a LocalRayCluster under a short temp
dir (Ray's socket paths must stay short), tear it down and remove the dir. Also a helper that waits
for backend events with a deadline, since an unmet Ray request waits forever."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.backends.base import Backend, BackendEvent, EventKind
from scheduler.local.ray_cluster import LocalRayCluster
from scheduler.model.cluster import Node
from scheduler.model.job import Job, JobSpec
from scheduler.model.plan import Allocation, NodeAllocation

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def three_nodes() -> list[Node]:
    """3 nodes × 8 logical GPUs in 2 regions / 2 racks."""
    return [
        Node(
            id="n1",
            region="r-east",
            zone="z1",
            rack="r-east/rack-a",
            nvlink_domain="r-east/rack-a/nv1",
            gpu_type="H100",
        ),
        Node(
            id="n2",
            region="r-east",
            zone="z1",
            rack="r-east/rack-a",
            nvlink_domain="r-east/rack-a/nv2",
            gpu_type="H100",
        ),
        Node(id="n3", region="r-west", zone="z2", rack="r-west/rack-b", gpu_type="A100"),
    ]


def short_root(tag: str = "t") -> Path:
    return Path(tempfile.mkdtemp(prefix=f"corral-{tag}-", dir="/tmp"))


@dataclass
class RayTestCluster:
    cluster: LocalRayCluster
    address: str
    root: Path
    start_s: float

    def stop(self) -> None:
        self.cluster.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(nodes: Sequence[Node], tag: str = "t") -> RayTestCluster:
    root = short_root(tag)
    cluster = LocalRayCluster(root)
    t0 = time.monotonic()
    try:
        address = cluster.start(nodes)
    except BaseException:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return RayTestCluster(cluster, address, root, time.monotonic() - t0)


@contextmanager
def running_cluster(nodes: Sequence[Node], tag: str = "t") -> Iterator[RayTestCluster]:
    test_cluster = start_cluster(nodes, tag)
    try:
        yield test_cluster
    finally:
        test_cluster.stop()


@dataclass
class Events:
    """Every event a backend reported, kept so several waits can look at the same history."""

    backend: Backend
    seen: list[BackendEvent] = field(default_factory=list)

    def wait_for(
        self, match: Callable[[BackendEvent], bool], timeout: float = 30.0, what: str = "event"
    ) -> BackendEvent:
        deadline = time.monotonic() + timeout
        while True:
            self.seen.extend(self.backend.poll())
            for event in self.seen:
                if match(event):
                    return event
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {timeout}s; seen: {self.seen}")
            time.sleep(0.05)

    def wait_job(self, job_id: str, kind: EventKind, timeout: float = 30.0) -> BackendEvent:
        return self.wait_for(
            lambda e: e.job_id == job_id and e.kind is kind, timeout, f"{kind.value} for {job_id}"
        )

    def of(self, job_id: str) -> list[EventKind]:
        self.seen.extend(self.backend.poll())
        return [e.kind for e in self.seen if e.job_id == job_id]


def job(job_id: str, command: str, nodes: int = 1, gpus: int = 1) -> Job:
    """A job for the backend tests (the backend sees only its id, spec and attempt)."""
    return Job(id=job_id, spec=JobSpec(command=command, nodes=nodes, gpus_per_node=gpus))


def alloc(*nodes: str, gpus: int = 1) -> Allocation:
    return Allocation(nodes=tuple(NodeAllocation(node=n, gpus=tuple(range(gpus))) for n in nodes))


def wait_until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.05)
