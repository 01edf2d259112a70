"""The distinct shapes of each queue's pending jobs, kept by an owner between cycles.

A cycle remembers, per outcome key (everything about a job that decides its fate but its
identity), why a job with that key had to wait. Once every pending job's key is known at the
cycle's current state, no job left can place, preempt or reserve anything, whatever the order:
a cycle that needs no reasons for them (the simulator's) may stop there. To tell that without
walking the jobs, the owner (scheduler/sim) keeps each queue's pending jobs grouped by shape: the
parts of the key that do not depend on the time, with the range of their submission times (the
key's one time-dependent part is whether a job has waited long enough to take an unbounded
reservation).

Given the key its owner sorts each queue's pending jobs with (`order`, with `order_signature`, what
that key depends on: policy/order.py), each group also keeps its jobs in that order, so that a cycle
can pass over a run of jobs whose outcome it knows without looking at them one by one
(policy/group_walk.py).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from scheduler.model.job import Job

# (priority, data region, GPU type, nodes, GPUs per node, time limit, service level)
Shape = tuple[str, str, str, int, int, float | None, int]


@dataclass(slots=True)
class ShapeGroup:
    count: int
    oldest: float  # earliest submission among its jobs (only ever widens while it has jobs)
    newest: float  # latest submission among its jobs (likewise)
    # With an `order`: its jobs' sort keys and the jobs, in the owner's queue order.
    keys: list[tuple[float | str, ...]] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    # The first part of each key (a number in every policy's key: policy/order.py), as a float:
    # a walk compares these, and the whole keys only where they are equal.
    firsts: list[float] = field(default_factory=list)


class PendingShapes:
    """queue → shape → its pending jobs' count and submission range. `thresholds` are the service
    levels the shapes were computed with (a cycle with other thresholds must not use them)."""

    def __init__(
        self,
        thresholds: tuple[float, ...],
        level: Callable[[float], int],
        order: Callable[[Job], tuple[float | str, ...]] | None = None,
        order_signature: object = None,
        effects_only: bool = True,
    ) -> None:
        self.thresholds = thresholds
        # The owner reads only the decisions that change its cluster (placements, preemptions,
        # rejections): a cycle may stop, or not start, once no job left can make one, leaving out
        # the reservations it would still have made (policy/cycle.py: _may_act). False: it stops
        # only once no job left can change anything at all (the plan is the plain walk's).
        self.effects_only = effects_only
        self._level = level
        self.groups: dict[str, dict[Shape, ShapeGroup]] = {}
        self.order = order
        self.order_signature = order_signature if order is not None else None
        # Array tasks with a %N cap pending now: a cycle must look at each of them.
        self.capped_tasks = 0
        # Two jobs of one group ever sorted by their tie-break (equal keys but for it) while their
        # submission times differ: the cycle's rank may then order them the other way round
        # (policy/group_walk.py), so the group walk is off for good. Never seen with real traces.
        self.order_ties = 0

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
            group = groups[shape] = ShapeGroup(1, job.submitted_at, job.submitted_at)
        else:
            group.count += 1
            group.oldest = min(group.oldest, job.submitted_at)
            group.newest = max(group.newest, job.submitted_at)
        if job.array_id is not None and job.array_max_running is not None:
            self.capped_tasks += 1
        if self.order is not None:
            key = self.order(job)
            at = bisect_left(group.keys, key)
            group.keys.insert(at, key)
            group.jobs.insert(at, job)
            group.firsts.insert(at, float(cast(float, key[0])))
            for other in (at - 1, at + 1):
                if 0 <= other < len(group.keys) and _tied(group, at, other):
                    self.order_ties += 1

    def remove(self, job: Job) -> None:
        groups = self.groups.get(job.spec.queue, {})
        shape = self.shape(job)
        group = groups[shape]
        group.count -= 1
        if job.array_id is not None and job.array_max_running is not None:
            self.capped_tasks -= 1
        if group.count == 0:
            del groups[shape]
        elif self.order is not None:
            at = bisect_left(group.keys, self.order(job))
            del group.keys[at], group.jobs[at], group.firsts[at]


def _tied(group: ShapeGroup, a: int, b: int) -> bool:
    """Whether jobs a and b of the group have equal keys but for the last part (the tie-break)
    and different submission times."""
    return (
        group.keys[a][:-1] == group.keys[b][:-1] and group.jobs[a].submitted_at != group.jobs[b].submitted_at
    )
