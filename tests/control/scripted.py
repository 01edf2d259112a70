"""A scripted stand-in for the Backend seam, for controller tests with fault injection.

RayBackend itself is exercised against a real Ray cluster in tests/backends and tests/e2e; this one
records what the controller asks for and lets a test deliver events, kill the controller between
commit and effect, or make a store write fail, at exactly the step it wants.
"""

from __future__ import annotations

from scheduler.backends.base import BackendEvent, EventKind
from scheduler.model.cluster import Node
from scheduler.model.job import Job
from scheduler.model.plan import Allocation


class ScriptedBackend:
    def __init__(self, nodes: list[Node]) -> None:
        self.node_list = list(nodes)
        self.events: list[BackendEvent] = []
        self.started: list[tuple[str, int]] = []
        self.stopped: list[tuple[str, int, float]] = []
        self.adopted: list[tuple[str, int]] = []
        self.removed: list[tuple[str, int]] = []
        self.released: list[tuple[str, int]] = []
        self.alive: set[tuple[str, int]] = set()

    def nodes(self) -> list[Node]:
        return list(self.node_list)

    def start(self, job: Job, allocation: Allocation) -> None:
        self.started.append((job.id, job.restart_count))
        self.alive.add((job.id, job.restart_count))

    def stop(self, job: Job, grace_s: float) -> None:
        self.stopped.append((job.id, job.restart_count, grace_s))

    def poll(self) -> list[BackendEvent]:
        out, self.events = self.events, []
        return out

    def attempt_pairs(self) -> set[tuple[str, int]]:
        return set(self.alive)

    def adopt(self, job: Job, allocation: Allocation) -> None:
        self.adopted.append((job.id, job.restart_count))

    def remove(self, job_id: str, attempt: int) -> None:
        self.removed.append((job_id, attempt))
        self.alive.discard((job_id, attempt))

    def release(self, job_id: str, attempt: int) -> None:
        self.released.append((job_id, attempt))
        self.alive.discard((job_id, attempt))

    def close(self) -> None:
        pass

    def emit(self, kind: EventKind, job_id: str, attempt: int, t: float, code: int | None = None) -> None:
        self.events.append(BackendEvent(kind, t, job_id, attempt, code))
