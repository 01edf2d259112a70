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

    def keys_at(self) -> int:
        """Changes whenever the outcome keys change (a reservation moves them): until then, a cell
        once given stays the cell of its jobs' key, whatever the epoch."""
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
        "firsts",
        "jobs",
        "keys",
        "old_cell",
        "penalty",
        "revision",
        "shape",
        "tier",
        "young",
        "young_cell",
    )

    def __init__(
        self, shape: Shape, keys: list[tuple[float | str, ...]], firsts: list[float], jobs: list[Job]
    ) -> None:
        self.shape = shape
        self.keys = keys
        self.firsts = firsts  # the first part of each key (ShapeGroup.firsts)
        self.jobs = jobs
        self.at = 0  # the first job not yet walked
        self.young = -1  # the first job too young for an unbounded reservation (-1: not worked out)
        # The parts of QueueMerger.rank shared by all its jobs, as of the queue's fair-share
        # `revision` (see _refresh and _entry)
        self.revision = -1
        self.tier = 0
        self.penalty = 0.0
        # The outcome cells of its old and of its young jobs, as of KnownOutcomes.keys_at `cells_at`.
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
        self._epoch = -1  # the cycle's epoch, read each time the walk resumes (see __iter__)
        self._keys_at = -1  # and its outcome keys' version
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
        # A queue's entry is its head's rank with the queue's name after it, in one flat tuple:
        # compared without a nested tuple (ranks hold the job's id, so no two are equal).
        heap: list[_Rank] = []
        for queue, cursors in self._cursors.items():
            head = _head(cursors)
            if head is not None:
                heap.append(self._entry(queue, head))
        heapq.heapify(heap)
        passes, look_after = 0, SETTLE_AFTER  # runs passed since the last job yielded
        # Only the caller's decisions change these: read once per resumption, not per look-up.
        self._epoch, self._keys_at = self._known.epoch(), self._known.keys_at()
        while heap:
            queue = cast(str, heapq.heappop(heap)[4])
            cursors = self._cursors[queue]
            cursor = _head(cursors)
            assert cursor is not None
            job = cursor.jobs[cursor.at]
            if self._knows(queue, cursor)[0 if self._is_old(cursor, cursor.at) else 1]:
                cursor.at += 1
                self._passed += 1 + self._pass_known(queue, cursors, heap[0] if heap else None)
                passes += 1
                if passes >= look_after:
                    if self._settled():
                        self._passed += self._pass_all()
                        return  # every job left has a known outcome: they only wait
                    look_after *= 2
            else:
                passes, look_after = 0, SETTLE_AFTER
                yield job  # the caller decides for it, which may change this queue's ranks
                self._epoch, self._keys_at = self._known.epoch(), self._known.keys_at()
                cursor.at += 1
            head = _head(cursors)
            if head is not None:
                heapq.heappush(heap, self._entry(queue, head))

    def _pass_known(self, queue: str, cursors: list[_Cursor], top: _Rank | None) -> int:
        """Walk past the queue's next jobs while their outcome is known and they rank before
        `top` (the best head of the other queues, as its heap entry); returns how many."""
        stop: tuple[float | str, ...] | None = None  # sort key of the first job not passed
        stop_first = 0.0  # its first part
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
                self._refresh(queue, c)
                first = _first_after(c, unknown, top, self.now_points)
            if first < end:
                f = c.firsts[first]
                if stop is None or f < stop_first or (f == stop_first and c.keys[first] < stop):
                    stop, stop_first = c.keys[first], f
        passed = 0
        for c in cursors:
            if c.at < len(c.jobs):
                to = len(c.jobs) if stop is None else _seek(c, stop_first, stop)
                passed += to - c.at
                c.at = to
        return passed

    def remaining(self) -> list[Job]:
        """The next job of each group not yet walked to its end (the one just yielded included):
        one job of each shape left to walk."""
        return [c.jobs[c.at] for cursors in self._cursors.values() for c in cursors if c.at < len(c.jobs)]

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
        epoch = self._epoch
        old, young = c.old_cell, c.young_cell
        if c.cells_at != self._keys_at or old is None or young is None:
            old = c.old_cell = self._known.outcome(queue, c.shape, True)
            young = c.young_cell = self._known.outcome(queue, c.shape, False)
            c.cells_at = self._keys_at
        return old.epoch == epoch, young.epoch == epoch

    def _refresh(self, queue: str, c: _Cursor) -> None:
        """Bring the group's tier and penalty (one tier and class for all its jobs) up to date with
        the queue's fair share, which moves when the queue is handed GPUs."""
        revision = self._fair.revision(queue)
        if c.revision != revision:
            c.tier, c.penalty = self.tier_and_penalty(queue, c.jobs[c.at])
            c.revision = revision

    def _entry(self, queue: str, c: _Cursor) -> _Rank:
        """The heap entry of the queue whose head is the group's next job: QueueMerger.rank of that
        job, then the queue. The static part of a job's rank is the first part of its sort key
        (order.pending_key: corral's is (corral_static, id))."""
        self._refresh(queue, c)
        job = c.jobs[c.at]
        return (c.tier, c.firsts[c.at] - self.now_points + c.penalty, job.submitted_at, job.id, queue)

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
    """The first of the group's jobs from c.at (before `end`) that ranks after `top` (a rank, or a
    heap entry: the rank of another job, then its queue), else `end`
    (c's tier and penalty are current). A group's ranks rise with its sort keys (same tier, class and level).
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
    """The rank of c's job `at` < top, for a group of top's tier: the rank is built only on a tie
    of the second part (the same arithmetic as _rank_at's, so ties are the same)."""
    second = c.firsts[at] - now_points + c.penalty
    if second != top[1]:
        return second < cast(float, top[1])
    return _rank_at(c, at, now_points) < top


def _rank_at(c: _Cursor, at: int, now_points: float) -> _Rank:
    """QueueMerger.rank of the group's job at an index, from its tier and penalty (current), with
    the arithmetic of _entry's (so that equal ranks compare equal)."""
    job = c.jobs[at]
    return (c.tier, c.firsts[at] - now_points + c.penalty, job.submitted_at, job.id)


def _seek(c: _Cursor, first: float, key: tuple[float | str, ...]) -> int:
    """The first of the group's jobs from c.at whose sort key is not below `key` (whose first part
    is `first`). Galloping on the keys' first parts: a run passes only a few jobs of each group,
    and floats compare faster than whole keys (compared only where the first parts are equal)."""
    firsts = c.firsts
    end = len(firsts)
    lo = hi = c.at  # every job before lo has a smaller first part
    step = 1
    while hi < end and firsts[hi] < first:
        lo = hi + 1
        hi = lo + step
        step *= 2
    at = bisect_left(firsts, first, lo, min(hi, end))
    while at < end and firsts[at] == first and c.keys[at] < key:
        at += 1
    return at


def _cursor(shape: Shape, group: ShapeGroup) -> _Cursor:
    return _Cursor(shape, group.keys, group.firsts, group.jobs)


def _head(cursors: list[_Cursor]) -> _Cursor | None:
    """The group holding the queue's next job (the smallest sort key not yet walked)."""
    best: _Cursor | None = None
    best_first = 0.0
    for c in cursors:
        if c.at < len(c.jobs):
            f = c.firsts[c.at]
            if best is None or f < best_first or (f == best_first and c.keys[c.at] < best.keys[best.at]):
                best, best_first = c, f
    return best
