"""What a cycle derives from one pool's running jobs, kept across cycles (snapshot.memo) and
brought up to date when only a few of them changed, as when one job starts or ends.

Jobs are told apart by identity: an owner that keeps its running jobs between cycles keeps the
same RunningJob object while nothing about the job changed, and makes a new one when it does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.model.snapshot import RunningJob

# Beyond this share of the pool's jobs changed, deriving afresh costs about as much as updating.
MAX_CHANGED_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class PoolMemo:
    """A value derived from one pool's running jobs, with the list it was made from."""

    jobs: Sequence[RunningJob]
    value: Any


@dataclass(frozen=True, slots=True)
class RunningChange:
    """How a pool's running jobs differ from an earlier list of them."""

    removed: frozenset[int]  # id() of the earlier list's jobs that are gone (alive in that list)
    gone: tuple[RunningJob, ...]  # those jobs
    added: tuple[RunningJob, ...]  # the jobs that list did not hold, in their new order


def change_between(before: Sequence[RunningJob], after: Sequence[RunningJob]) -> RunningChange | None:
    """What changed from `before` to `after`, or None when so much did that an update would not pay."""
    old = {id(r) for r in before}
    new = {id(r) for r in after}
    added = tuple(r for r in after if id(r) not in old)
    gone = tuple(r for r in before if id(r) not in new)
    if len(added) + len(gone) > max(8.0, MAX_CHANGED_SHARE * len(after)):
        return None
    return RunningChange(frozenset(map(id, gone)), gone, added)
