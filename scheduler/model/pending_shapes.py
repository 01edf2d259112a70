"""The distinct shapes of each queue's pending jobs, kept by an owner between cycles.

A cycle remembers, per outcome key (everything about a job that decides its fate but its
identity), why a job with that key had to wait. Once every pending job's key is known at the
cycle's current state, no job left can place, preempt or reserve anything, whatever the order:
a cycle that needs no reasons for them (the simulator's) may stop there. To tell that without
walking the jobs, the owner (scheduler/sim) keeps each queue's pending jobs grouped by shape: the
parts of the key that do not depend on the time, with the range of their submission times (the
key's one time-dependent part is whether a job has waited long enough to take an unbounded
reservation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scheduler.model.job import Job

# (priority, data region, GPU type, nodes, GPUs per node, time limit, service level)
Shape = tuple[str, str, str, int, int, float | None, int]


@dataclass(slots=True)
class ShapeGroup:
    count: int
    oldest: float  # earliest submission among its jobs (only ever widens while it has jobs)
    newest: float  # latest submission among its jobs (likewise)


class PendingShapes:
    """queue → shape → its pending jobs' count and submission range. `thresholds` are the service
    levels the shapes were computed with (a cycle with other thresholds must not use them)."""

    def __init__(self, thresholds: tuple[float, ...], level: Callable[[float], int]) -> None:
        self.thresholds = thresholds
        self._level = level
        self.groups: dict[str, dict[Shape, ShapeGroup]] = {}

    def shape(self, job: Job) -> Shape:
        spec = job.spec
        return (
            spec.priority,
            spec.data_region,
            spec.gpu_type,
            spec.nodes,
            spec.gpus_per_node,
            spec.time_limit_s,
            self._level(job.attained_gpu_s),
        )

    def add(self, job: Job) -> None:
        groups = self.groups.setdefault(job.spec.queue, {})
        shape = self.shape(job)
        group = groups.get(shape)
        if group is None:
            groups[shape] = ShapeGroup(1, job.submitted_at, job.submitted_at)
            return
        group.count += 1
        group.oldest = min(group.oldest, job.submitted_at)
        group.newest = max(group.newest, job.submitted_at)

    def remove(self, job: Job) -> None:
        groups = self.groups.get(job.spec.queue, {})
        shape = self.shape(job)
        group = groups[shape]
        group.count -= 1
        if group.count == 0:
            del groups[shape]
