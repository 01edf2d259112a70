"""Step 4, backfill (EASY): one reservation per pool for its head job; others run in the holes.

The head job of a pool that cannot start gets the nodes that free up first, judged by the time
limits of the jobs running there. A later job may start on those nodes only if its own time
limit ends before the reservation begins; any job may use nodes outside the reservation.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scheduler.model.capacity import CapacityError, CapacityIndex
from scheduler.model.cluster import PoolKey
from scheduler.model.job import JobSpec
from scheduler.model.snapshot import RunningChange, RunningJob
from scheduler.policy.place import find_allocation


@dataclass(frozen=True, slots=True)
class Reservation:
    job_id: str
    pool: PoolKey
    nodes: frozenset[str]
    start: float | None  # None: unbounded (a job it waits for has no time limit)


def plan_reservation(
    capacity: CapacityIndex,
    pool: PoolKey,
    spec: JobSpec,
    job_id: str,
    running_in_pool: Iterable[RunningJob],
    now: float,
    allow_unbounded: bool = True,
    in_drain_order: bool = False,
) -> Reservation | None:
    """The earliest nodes and time the head job could start if running jobs end at their limits.

    None if even an empty pool could not hold it, or if the start cannot be bounded (it waits
    for a job without a time limit) and `allow_unbounded` is false. `in_drain_order`: the
    running jobs are already sorted by `drain_order` (a cycle sorts each pool once).
    """
    if not allow_unbounded:
        # Only jobs with a time limit can bound the start; without one among them, nothing to do.
        running_in_pool = list(running_in_pool)
        if not any(r.expected_end is not None for r in running_in_pool):
            return None
    ordered = running_in_pool if in_drain_order else drain_order(running_in_pool)
    scratch = capacity
    start: float | None = now
    for r in ordered:
        try:
            scratch = scratch.release(r.allocation)
        except CapacityError:
            continue  # GPUs already counted free (the job is leaving): nothing more to release
        end = r.expected_end
        if end is None and not allow_unbounded:
            return None
        if start is not None:
            start = None if end is None else max(start, end)
        alloc = find_allocation(scratch, pool, spec.nodes, spec.gpus_per_node)
        if alloc is not None:
            return Reservation(job_id, pool, frozenset(alloc.node_ids), start)
    return None


def drain_order(running_in_pool: Iterable[RunningJob]) -> list[RunningJob]:
    """The order in which running jobs free their GPUs, judged by their time limits.

    Among equal ends (all unbounded ones), the oldest first: no new job may start on reserved
    nodes, so their jobs only age and the next cycle picks the same nodes, which drain. (Youngest
    first would move the reservation to the nodes that just took new work, and it never drains.)
    """
    return sorted(running_in_pool, key=_drain_key)


def drain_order_after(ordered: Sequence[RunningJob], change: RunningChange) -> list[RunningJob]:
    """drain_order of the pool's jobs after `change`, from their earlier drain order (the key is a
    total order: the same list a fresh sort gives)."""
    removed = change.removed
    updated = [r for r in ordered if id(r) not in removed] if removed else list(ordered)
    for r in change.added:
        bisect.insort(updated, r, key=_drain_key)
    return updated


def _drain_key(r: RunningJob) -> tuple[float, float, str]:
    limit = r.job.spec.time_limit_s  # RunningJob.expected_end, inlined: every running job is keyed
    return (math.inf if limit is None else r.started_at + limit, r.started_at, r.id)


def ends_before(spec: JobSpec, now: float, start: float | None) -> bool:
    """May a job with this spec use reserved nodes (it is gone before the reservation starts)?"""
    return limit_ends_before(spec.time_limit_s, now, start)


def limit_ends_before(time_limit_s: float | None, now: float, start: float | None) -> bool:
    """ends_before, for a job with this time limit."""
    if start is None or time_limit_s is None:
        return False
    return now + time_limit_s <= start
