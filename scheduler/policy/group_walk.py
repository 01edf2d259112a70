"""Step 1 for a cycle that gives no reason to the jobs that wait (the simulator's): the merge of
QueueMerger, yielding only the jobs whose outcome is not yet known, and passing over the runs of
jobs in between in a few look-ups each instead of one by one.

A cycle (cycle.py) remembers, per outcome key, why a job with that key waited, until its state
changes; a later job with a known key only waits. In a deep backlog most of the walk is such jobs:
about 500 a cycle on the contended Philly replay, with only ~17 whose outcome was unknown. The
owner (scheduler/sim) keeps each queue's pending jobs grouped by shape, each group in the queue's
own order (model/pending_shapes.py); a group's jobs share an outcome key, except that the older
ones may take an unbounded reservation (a prefix of the group), and share a tier and a class, so
their ranks rise along the group like their sort keys.

The merge pops the queue whose head ranks first, as QueueMerger does. When that head's outcome is
known, the same queue keeps coming next while its following jobs rank before every other queue's
head; so the walk passes at once over all of them up to the first one that does not (found by a
binary search on rank in each group) or whose outcome is unknown (the head of a group, or of its
younger part), and counts them (`passed_over`) for the scan depth. The jobs yielded, their order,
and the cycle's state when each is yielded are exactly QueueMerger's; only the walked-past jobs
are not looked at (tests/policy/test_group_walk.py compares both walks' plans). Once the outcome
of every job left is known, the walk stops: they all only wait (and count as passed over).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Protocol, cast

from scheduler.model.job import Job, PendingReason
from scheduler.model.pending_shapes import PendingShapes, Shape, ShapeGroup
from scheduler.model.snapshot import ClusterSnapshot
from scheduler.policy.config import PolicyConfig
from scheduler.policy.order import FairShare, PendingKey, QueueMerger

# Runs passed over in a row before the walk first asks whether every outcome left is known (then
# after twice as many each time one is not): asking costs a look-up per group.
SETTLE_AFTER = 8


class Outcome:
    """Why a job with some outcome key waited, and at which of the cycle's epochs (known while the
    cycle is still at that epoch). One per key and cycle: a walk holds on to the cells of its groups'
    keys for an epoch instead of looking the keys up again at each step."""

    __slots__ = ("epoch", "reason")

    def __init__(self) -> None:
        self.epoch = -1  # none yet
        self.reason: PendingReason | None = None


class KnownOutcomes(Protocol):
    """The cycle's outcomes, as the walk asks them (cycle.py)."""

    def epoch(self) -> int:
        """The cycle's current epoch: it changes whenever a decision could change an outcome."""
        ...

    def outcome(self, queue: str, shape: Shape, old: bool) -> Outcome:
        """The cell of a job of that queue and shape, old enough (or not) to take an unbounded
        reservation, at the current epoch: its outcome is known if cell.epoch is that epoch."""
        ...


_Rank = tuple[float | str, ...]


class _Cursor:
    """One group's jobs in queue order and how far this cycle's walk has passed them. A plain
    class: a dataclass's generated __init__ stays interpreted in the compiled build, and a cycle
    makes one cursor per group."""

    __slots__ = (
        "at",
        "cells_at",
        "jobs",
        "keys",
        "old_cell",
        "penalty",
        "rank",
        "revision",
        "shape",
        "tier",
        "young",
        "young_cell",
    )

    def __init__(self, shape: Shape, keys: list[tuple[float | str, ...]], jobs: list[Job]) -> None:
        self.shape = shape
        self.keys = keys
        self.jobs = jobs
        self.at = 0  # the first job not yet walked
        self.young = -1  # the first job too young for an unbounded reservation (-1: not worked out)
        # QueueMerger.rank of its job at an index, made at the queue's fair-share `revision` from
        # the group's `tier` and `penalty` (see _rank_in)
        self.rank: Callable[[int], _Rank] | None = None
        self.revision = -1
        self.tier = 0
        self.penalty = 0.0
        # The outcome cells of its old and of its young jobs, as of the epoch `cells_at`.
        self.cells_at = -1
        self.old_cell: Outcome | None = None
        self.young_cell: Outcome | None = None


class GroupMerger(QueueMerger):
    def __init__(
        self,
        snapshot: ClusterSnapshot,
        config: PolicyConfig,
        now: float,
        key: PendingKey,
        fair_share: FairShare,
        static: Callable[[Job], float] | None,
        shapes: PendingShapes,
        known: KnownOutcomes,
    ) -> None:
        super().__init__(snapshot, config, now, key, fair_share, static, heads=False)
        self._fair = fair_share
        self._known = known
        self._old_after = config.reserve_unbounded_after_s
        self._cursors = {
            queue: [_cursor(shape, group) for shape, group in groups.items() if group.jobs]
            for queue, groups in shapes.groups.items()
            if queue in snapshot.pending
        }
        self._passed = 0

    def passed_over(self) -> int:
        passed, self._passed = self._passed, 0
        return passed

    def __iter__(self) -> Iterator[Job]:
        heap: list[tuple[_Rank, str]] = []
        for queue, cursors in self._cursors.items():
            head = _head(cursors)
            if head is not None:
                heap.append((self._rank_in(queue, head)(head.at), queue))
        heapq.heapify(heap)
        passes, look_after = 0, SETTLE_AFTER  # runs passed since the last job yielded
        while heap:
            _, queue = heapq.heappop(heap)
            cursors = self._cursors[queue]
            cursor = _head(cursors)
            assert cursor is not None
            job = cursor.jobs[cursor.at]
            if self._knows(queue, cursor)[0 if self._is_old(cursor, cursor.at) else 1]:
                cursor.at += 1
                self._passed += 1 + self._pass_known(queue, cursors, heap[0][0] if heap else None)
                passes += 1
                if passes >= look_after:
                    if self._settled():
                        self._passed += self._pass_all()
                        return  # every job left has a known outcome: they only wait
                    look_after *= 2
            else:
                passes, look_after = 0, SETTLE_AFTER
                yield job  # the caller decides for it, which may change this queue's ranks
                cursor.at += 1
            head = _head(cursors)
            if head is not None:
                heapq.heappush(heap, (self._rank_in(queue, head)(head.at), queue))

    def _pass_known(self, queue: str, cursors: list[_Cursor], top: _Rank | None) -> int:
        """Walk past the queue's next jobs while their outcome is known and they rank before
        `top` (the best head of the other queues); returns how many."""
        stop: tuple[float | str, ...] | None = None  # sort key of the first job not passed
        for c in cursors:
            end = len(c.jobs)
            if c.at >= end:
                continue
            young = self._young(c)
            old_known, young_known = self._knows(queue, c)
            if c.at < young and not old_known:
                unknown = c.at
            else:
                first_young = max(c.at, young)
                unknown = first_young if first_young < end and not young_known else end
            first = unknown
            if top is not None and c.at < unknown:
                self._rank_in(queue, c)
                first = _first_after(c, unknown, top, self.now_points)
            if first < end and (stop is None or c.keys[first] < stop):
                stop = c.keys[first]
        passed = 0
        for c in cursors:
            if c.at < len(c.jobs):
                to = len(c.jobs) if stop is None else bisect_left(c.keys, stop, c.at)
                passed += to - c.at
                c.at = to
        return passed

    def _settled(self) -> bool:
        """Whether the outcome of every job not yet walked is known (then none can change anything)."""
        for queue, cursors in self._cursors.items():
            for c in cursors:
                if c.at >= len(c.jobs):
                    continue
                young = self._young(c)
                old_known, young_known = self._knows(queue, c)
                if c.at < young and not old_known:
                    return False
                if young < len(c.jobs) and not young_known:
                    return False
        return True

    def _pass_all(self) -> int:
        passed = 0
        for cursors in self._cursors.values():
            for c in cursors:
                passed += len(c.jobs) - c.at
                c.at = len(c.jobs)
        return passed

    def _knows(self, queue: str, c: _Cursor) -> tuple[bool, bool]:
        """Whether the outcome of the group's old jobs, and of its young ones, is known now."""
        epoch = self._known.epoch()
        old, young = c.old_cell, c.young_cell
        if c.cells_at != epoch or old is None or young is None:
            old = c.old_cell = self._known.outcome(queue, c.shape, True)
            young = c.young_cell = self._known.outcome(queue, c.shape, False)
            c.cells_at = epoch
        return old.epoch == epoch, young.epoch == epoch

    def _rank_in(self, queue: str, c: _Cursor) -> Callable[[int], _Rank]:
        """QueueMerger.rank of the group's job at an index (one tier and class for them all),
        remade when the queue's share moves. The static part of a job's rank is the first part of
        its sort key (order.pending_key: corral's is (corral_static, id)), so it is read from there."""
        revision = self._fair.revision(queue)
        if c.rank is None or c.revision != revision:
            tier, penalty = self.tier_and_penalty(queue, c.jobs[c.at])
            keys, jobs, now_points = c.keys, c.jobs, self.now_points

            def rank(at: int) -> _Rank:
                job = jobs[at]
                return (tier, cast(float, keys[at][0]) - now_points + penalty, job.submitted_at, job.id)

            c.rank, c.revision, c.tier, c.penalty = rank, revision, tier, penalty
        return c.rank

    def _is_old(self, c: _Cursor, at: int) -> bool:
        return at < self._young(c)

    def _young(self, c: _Cursor) -> int:
        """The first job of the group that has not waited long enough to take an unbounded
        reservation; the group's jobs are in submission order."""
        if c.young < 0:
            now, after = self._now, self._old_after
            lo, hi = 0, len(c.jobs)
            while lo < hi:
                mid = (lo + hi) // 2
                if now - c.jobs[mid].submitted_at >= after:  # as the outcome key says it
                    lo = mid + 1
                else:
                    hi = mid
            c.young = lo
        return c.young


def _first_after(c: _Cursor, end: int, top: _Rank, now_points: float) -> int:
    """The first of the group's jobs from c.at (before `end`) that ranks after `top`, else `end`
    (c.rank is current). A group's ranks rise with its sort keys (same tier, class and level).
    Galloping: the other queues' heads usually cut a run short."""
    lo = c.at
    if c.tier != top[0]:  # the whole group ranks on one side of top
        return lo if c.tier > cast(int, top[0]) else end
    if not _ranks_before(c, lo, top, now_points):  # no rank equals top: its job is another
        return lo
    step = 1  # jobs[lo] ranks before top; find a later one that does not
    while lo + step < end and _ranks_before(c, lo + step, top, now_points):
        lo += step
        step *= 2
    lo, hi = lo + 1, min(lo + step, end)
    while lo < hi:
        mid = (lo + hi) // 2
        if _ranks_before(c, mid, top, now_points):
            lo = mid + 1
        else:
            hi = mid
    return lo


def _ranks_before(c: _Cursor, at: int, top: _Rank, now_points: float) -> bool:
    """c.rank(at) < top for a group of top's tier, building the rank only on a tie of the second
    part (the same arithmetic as the rank's, so ties are the same)."""
    second = cast(float, c.keys[at][0]) - now_points + c.penalty
    if second != top[1]:
        return second < cast(float, top[1])
    assert c.rank is not None
    return c.rank(at) < top


def _cursor(shape: Shape, group: ShapeGroup) -> _Cursor:
    return _Cursor(shape, group.keys, group.jobs)


def _head(cursors: list[_Cursor]) -> _Cursor | None:
    """The group holding the queue's next job (the smallest sort key not yet walked)."""
    best: _Cursor | None = None
    for c in cursors:
        if c.at < len(c.jobs) and (best is None or c.keys[c.at] < best.keys[best.at]):
            best = c
    return best
