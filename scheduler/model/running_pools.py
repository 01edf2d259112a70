"""The running jobs grouped by pool, kept by an owner between cycles (the simulator), with what
changed in each pool since the last snapshot.

A cycle derives values from one pool's running jobs (the drain order, the victim candidates, the
array counts) and keeps them across cycles while the pool's list is the same object; when a few
jobs started or ended it brings them up to date from what changed (policy/pool_memo.py). Without
an owner's help the cycle groups every running job by pool and compares each pool's list with the
one it saw before, job by job, at every cycle. The owner knows what it changed: it keeps each
pool's list in the order of its running-jobs mapping (a new job last, a changed one in its place),
copies a list only when it changes one that a snapshot holds, and hands each changed pool's
earlier list with the change.

Jobs are told apart by identity, as in pool_memo.py: an owner makes a new RunningJob whenever
something about a job changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.model.cluster import PoolKey
from scheduler.model.snapshot import LentChange, RunningChange, RunningJob

# Beyond this share of the pool's jobs changed, deriving afresh costs about as much as updating.
MAX_CHANGED_SHARE = 0.25


def worth_updating(changed: int, jobs: int) -> bool:
    """Whether `changed` jobs of a pool of `jobs` are few enough to update derived values from."""
    return changed <= max(8.0, MAX_CHANGED_SHARE * jobs)


class RunningPools:
    """Each pool's running jobs, in the order of the owner's running-jobs mapping."""

    def __init__(self) -> None:
        self._lists: dict[PoolKey, list[RunningJob]] = {}
        # Pools changed since the last snapshot: the list it held, and the jobs added to and gone
        # from it since (by job id; a job changed twice counts once).
        self._before: dict[PoolKey, list[RunningJob]] = {}
        self._added: dict[PoolKey, dict[str, RunningJob]] = {}
        self._gone: dict[PoolKey, dict[str, RunningJob]] = {}

    def put(self, old: RunningJob | None, new: RunningJob) -> None:
        """`new` runs; it replaces `old` (the same job) where it stood, or comes last."""
        if old is new:
            return
        jobs, added, gone = self._changing(new.pool)
        if old is None:
            jobs.append(new)
        else:
            jobs[_index(jobs, old)] = new
            if added.pop(old.id, None) is None:
                gone[old.id] = old
        added[new.id] = new

    def remove(self, old: RunningJob) -> None:
        jobs, added, gone = self._changing(old.pool)
        del jobs[_index(jobs, old)]
        if added.pop(old.id, None) is None:
            gone[old.id] = old

    def lend(self) -> tuple[dict[PoolKey, Sequence[RunningJob]], dict[PoolKey, LentChange]]:
        """The pools that have running jobs, each with its list (not to be changed by the
        borrower), and for each pool changed since the last call, its list then and the change."""
        changes: dict[PoolKey, LentChange] = {}
        for pool, before in self._before.items():
            added, gone = self._added[pool], self._gone[pool]
            change = None
            if worth_updating(len(added) + len(gone), len(self._lists[pool])):
                left = tuple(gone.values())
                change = RunningChange(frozenset(map(id, left)), left, tuple(added.values()))
            changes[pool] = (before, change)
        self._before.clear()
        self._added.clear()
        self._gone.clear()
        return {pool: jobs for pool, jobs in self._lists.items() if jobs}, changes

    def _changing(
        self, pool: PoolKey
    ) -> tuple[list[RunningJob], dict[str, RunningJob], dict[str, RunningJob]]:
        """The pool's list, ready to change: copied first if a snapshot holds it."""
        if pool not in self._before:
            lent = self._lists.get(pool, [])
            self._before[pool] = lent
            self._lists[pool] = list(lent)
            self._added[pool] = {}
            self._gone[pool] = {}
        return self._lists[pool], self._added[pool], self._gone[pool]


def _index(jobs: list[RunningJob], r: RunningJob) -> int:
    for i, candidate in enumerate(jobs):
        if candidate is r:
            return i
    raise KeyError(r.id)
