"""What a cycle derives from one pool's running jobs, kept across cycles (snapshot.memo) and
brought up to date when only a few of them changed, as when one job starts or ends.

Jobs are told apart by identity: an owner that keeps its running jobs between cycles keeps the
same RunningJob object while nothing about the job changed, and makes a new one when it does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.model.running_pools import worth_updating
from scheduler.model.snapshot import RunningChange, RunningJob


@dataclass(frozen=True, slots=True)
class PoolMemo:
    """A value derived from one pool's running jobs, with the list it was made from."""

    jobs: Sequence[RunningJob]
    value: Any


def change_between(before: Sequence[RunningJob], after: Sequence[RunningJob]) -> RunningChange | None:
    """What changed from `before` to `after`, or None when so much did that an update would not pay.
    (An owner that keeps the running jobs by pool says so itself: model/running_pools.py.)"""
    old = {id(r) for r in before}
    new = {id(r) for r in after}
    added = tuple(r for r in after if id(r) not in old)
    gone = tuple(r for r in before if id(r) not in new)
    if not worth_updating(len(added) + len(gone), len(after)):
        return None
    return RunningChange(frozenset(map(id, gone)), gone, added)
