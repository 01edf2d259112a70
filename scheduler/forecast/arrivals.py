"""The arrivals a what-if replays: the last horizon's submissions again, or a trace, from now on."""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.forecast.runtimes import RuntimeModel
from scheduler.model.job import Job
from scheduler.sim.records import TraceJob
from scheduler.view import finished_runtime

__all__ = ["recent_arrivals", "trace_arrivals"]


def recent_arrivals(
    recent: Sequence[Job], now: float, horizon_s: float, runtimes: RuntimeModel
) -> list[TraceJob]:
    """Each job submitted in [now - horizon, now] submitted again `horizon_s` later (the next horizon
    looks like the last one), under a new id (`<id>+`). It runs for what it took if it finished, else
    for the learned runtime (capped by its time limit). Jobs that ended without ever running
    (cancelled while pending, rejected) are left out."""
    out: list[TraceJob] = []
    for job in recent:
        if not now - horizon_s <= job.submitted_at <= now:
            continue
        ran = finished_runtime(job) if job.state.terminal else None
        if job.state.terminal and ran is None:
            continue
        runtime = ran if ran is not None else runtimes.pending_runtime(job)
        out.append(TraceJob(f"{job.id}+", job.submitted_at + horizon_s, runtime, job.spec))
    return sorted(out, key=lambda j: (j.submit_time, j.job_id))


def trace_arrivals(trace: Sequence[TraceJob], now: float) -> list[TraceJob]:
    """A trace's jobs arriving from now on (its first submit is now), under new ids (`trace-<id>`)."""
    if not trace:
        return []
    first = min(j.submit_time for j in trace)
    return [TraceJob(f"trace-{j.job_id}", now + j.submit_time - first, j.duration, j.spec) for j in trace]
