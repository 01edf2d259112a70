"""Start-up reconciliation: the store says what should run, the backend says what does.

Placement groups and worker actors are named from the job id and its attempt, so the match is
exact: an attempt the store expects and Ray runs is adopted (never started twice); a committed
start whose effect never ran is started again under the same name; work that vanished is
requeued; anything Ray runs that the store does not expect is an orphan and is removed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from scheduler.backends.base import EventKind
from scheduler.control.transitions import Start, Step, Stop, end_of_attempt, holds_gpus, requeue, stop_grace
from scheduler.model.job import JobState
from scheduler.model.records import JobRecord


@dataclass(slots=True)
class Reconciliation:
    step: Step = field(default_factory=Step)
    adopt: list[JobRecord] = field(default_factory=list)  # running now; watch them again
    orphans: list[tuple[str, int]] = field(default_factory=list)  # (job id, attempt) to remove


def reconcile(records: Sequence[JobRecord], alive: Collection[tuple[str, int]], now: float) -> Reconciliation:
    """`alive`: the (job id, attempt) pairs the backend runs now."""
    out = Reconciliation()
    alive_set = set(alive)
    expected: dict[str, int] = {}
    for rec in records:
        if not holds_gpus(rec):
            continue
        attempt = rec.job.restart_count
        expected[rec.id] = attempt
        if (rec.id, attempt) in alive_set:
            out.adopt.append(rec)
            if rec.stop_reason is not None and rec.stop_requested_at is not None:
                # A stop was under way: finish it with what is left of its grace period.
                left = max(0.0, stop_grace(rec) - (now - rec.stop_requested_at))
                out.step.effects.append(Stop(rec.job, left))
        elif rec.state is JobState.STARTING and rec.stop_reason is None:
            # The plan was committed but its start never reached Ray: carry it out now.
            assert rec.allocation is not None
            out.step.effects.append(Start(rec.job, rec.allocation))
            out.step.note(rec, "RESTARTED_START", now, "start re-issued after a controller restart")
        else:
            out.step.note(rec, "LOST", now, "its processes vanished while the controller was down")
            if rec.stop_reason is None:  # lost work, not a failed start: requeue without penalty
                requeue(rec, now, out.step, "its processes vanished while the controller was down: requeued")
            else:  # the stop under way is done: it ends as that stop would have
                end_of_attempt(rec, EventKind.STOPPED, None, now, out.step)
    out.orphans.extend(sorted(unexpected(records, alive_set)))
    return out


def unexpected(records: Sequence[JobRecord], alive: Collection[tuple[str, int]]) -> set[tuple[str, int]]:
    """The (job id, attempt) pairs the backend runs that no record holding GPUs expects: an old
    attempt, a job that holds no GPUs (pending again, or ended), or a job the store never had."""
    expected = {rec.id: rec.job.restart_count for rec in records if holds_gpus(rec)}
    return {(job_id, attempt) for job_id, attempt in alive if expected.get(job_id) != attempt}
