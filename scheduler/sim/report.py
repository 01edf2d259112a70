"""Summaries of simulation runs: per-policy metrics, a comparison table and its JSON form.

Conventions used throughout:

* Percentiles use numpy's default *linear* interpolation between closest ranks (numpy's
  ``method="linear"``, Hyndman & Fan type 7): the p-th percentile of n sorted values v is
  v[k] + f·(v[k+1] − v[k]) with k + f = (n − 1)·p / 100.
* Every record of a run counts as a finished job (records carry a finish time); rejected jobs are
  counted apart and appear in no other metric.
* Slowdown is JCT / max(duration, 1 s): flooring the duration at one second keeps near-zero jobs
  from blowing the ratio up. The same floor applies to the isolated time in finish-time fairness.
* An empty run yields zeros (never NaN, so the JSON stays valid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.table import Table

from scheduler.sim.bounds import Bounds
from scheduler.sim.records import JobRecord, RunResult, TimelinePoint

MIN_DURATION_S = 1.0  # floor on a job's duration in slowdown and ρ

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class PolicySummary:
    """The headline numbers of one policy's run."""

    policy: str
    total_gpus: int
    jobs: int  # finished jobs (records)
    avg_jct_s: float
    p50_jct_s: float
    p99_jct_s: float
    avg_wait_s: float
    p99_wait_s: float
    makespan_s: float  # first submit → last finish, over the records
    gpu_allocation_rate: float  # time-weighted allocated GPUs / total GPUs over the makespan window
    preemptions: int
    avg_slowdown: float
    p99_slowdown: float
    max_ftf_rho: float  # Themis finish-time fairness, worst job
    rejected: int


def _percentile(values: FloatArray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else 0.0


def _mean(values: FloatArray) -> float:
    return float(values.mean()) if values.size else 0.0


def allocation_rate(timeline: list[TimelinePoint], total_gpus: int, start: float, end: float) -> float:
    """Time-weighted mean of allocated_gpus / total_gpus over [start, end].

    Each point's allocated_gpus holds from its time to the next point's time; the last point holds to
    `end`, and before the first point nothing is allocated. Points need not be sorted (a stable sort
    keeps the later of two equal-time points in force).
    """
    if end <= start or total_gpus <= 0 or not timeline:
        return 0.0
    times = np.fromiter((p.time for p in timeline), dtype=np.float64, count=len(timeline))
    alloc = np.fromiter((p.allocated_gpus for p in timeline), dtype=np.float64, count=len(timeline))
    order = np.argsort(times, kind="stable")
    times, alloc = times[order], alloc[order]
    seg_start = np.clip(times, start, end)
    seg_end = np.clip(np.append(times[1:], end), start, end)
    busy = float(np.sum(alloc * np.maximum(seg_end - seg_start, 0.0)))
    return busy / (total_gpus * (end - start))


def jobs_present_at_submit(records: list[JobRecord]) -> npt.NDArray[np.int64]:
    """N_j for each record: jobs submitted at or before j's submit time and not finished by then.

    A job finishing exactly at j's submit time is gone; j itself always counts (even with a zero
    JCT). One sort of submits and finishes and a binary search per job: O(n log n).
    """
    n = len(records)
    submits = np.fromiter((r.submit_time for r in records), dtype=np.float64, count=n)
    finishes = np.fromiter((r.finish_time for r in records), dtype=np.float64, count=n)
    submitted = np.searchsorted(np.sort(submits), submits, side="right")
    finished = np.searchsorted(np.sort(finishes), submits, side="right")
    present: npt.NDArray[np.int64] = (submitted - finished + (finishes <= submits)).astype(np.int64)
    # (the last term adds j back when it "finished" at its own submit time)
    return np.maximum(present, 1)


def summarize(result: RunResult) -> PolicySummary:
    """Reduce one run to its PolicySummary (see the module notes for the conventions)."""
    records = result.records
    n = len(records)
    jct = np.fromiter((r.jct for r in records), dtype=np.float64, count=n)
    wait = np.fromiter((r.wait for r in records), dtype=np.float64, count=n)
    duration = np.fromiter((r.duration for r in records), dtype=np.float64, count=n)
    gpus = np.fromiter((r.gpus for r in records), dtype=np.float64, count=n)
    floored = np.maximum(duration, MIN_DURATION_S)
    slowdown = jct / floored if n else np.zeros(0)

    if n:
        first_submit = min(r.submit_time for r in records)
        last_finish = max(r.finish_time for r in records)
        makespan = max(last_finish - first_submit, 0.0)
        present = jobs_present_at_submit(records).astype(np.float64)
        contention = np.maximum(1.0, gpus * present / max(result.total_gpus, 1))
        rho = jct / (floored * contention)
        max_rho = float(rho.max())
        rate = allocation_rate(result.timeline, result.total_gpus, first_submit, last_finish)
    else:
        makespan, max_rho, rate = 0.0, 0.0, 0.0

    return PolicySummary(
        policy=result.policy,
        total_gpus=result.total_gpus,
        jobs=n,
        avg_jct_s=_mean(jct),
        p50_jct_s=_percentile(jct, 50),
        p99_jct_s=_percentile(jct, 99),
        avg_wait_s=_mean(wait),
        p99_wait_s=_percentile(wait, 99),
        makespan_s=makespan,
        gpu_allocation_rate=rate,
        preemptions=result.preemptions,
        avg_slowdown=_mean(slowdown),
        p99_slowdown=_percentile(slowdown, 99),
        max_ftf_rho=max_rho,
        rejected=len(result.rejected),
    )


def to_json_dict(summary: PolicySummary) -> dict[str, float | int]:
    """The summary as plain JSON numbers (policy name and cluster size are left to the caller)."""
    return {
        "jobs": summary.jobs,
        "avg_jct_s": summary.avg_jct_s,
        "p50_jct_s": summary.p50_jct_s,
        "p99_jct_s": summary.p99_jct_s,
        "avg_wait_s": summary.avg_wait_s,
        "p99_wait_s": summary.p99_wait_s,
        "makespan_s": summary.makespan_s,
        "gpu_allocation_rate": summary.gpu_allocation_rate,
        "preemptions": summary.preemptions,
        "avg_slowdown": summary.avg_slowdown,
        "p99_slowdown": summary.p99_slowdown,
        "max_ftf_rho": summary.max_ftf_rho,
        "rejected": summary.rejected,
    }


def format_duration(seconds: float) -> str:
    """Human-readable duration: '0.4 s', '12 s', '4.5 m', '41 m', '2.3 h', '3.1 d'."""
    if not np.isfinite(seconds):
        return "—"
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s < 10:
        return f"{sign}{s:.1f} s"
    if s < 60:
        return f"{sign}{s:.0f} s"
    if s < 600:
        return f"{sign}{s / 60:.1f} m"
    if s < 3600:
        return f"{sign}{s / 60:.0f} m"
    if s < 2 * 86400:
        return f"{sign}{s / 3600:.1f} h"
    return f"{sign}{s / 86400:.1f} d"


def _ratio(value: float, bound: float) -> float | None:
    return value / bound if bound > 0 else None


def _fmt_ratio(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}×"


def comparison_table(summaries: dict[str, PolicySummary], bounds: Bounds) -> Table:
    """A rich Table with one row per policy and a final 'lower bound' row."""
    table = Table(title="Policy comparison", title_justify="left")
    table.add_column("policy", style="bold")
    for name in (
        "jobs",
        "avg JCT",
        "p50 JCT",
        "p99 JCT",
        "avg wait",
        "p99 wait",
        "makespan",
        "GPU alloc",
        "preempt",
        "avg slowdown",
        "max ρ",
        "avg JCT / bound",
        "makespan / bound",
    ):
        table.add_column(name, justify="right")
    for name, s in summaries.items():
        table.add_row(
            name,
            f"{s.jobs:,}",
            format_duration(s.avg_jct_s),
            format_duration(s.p50_jct_s),
            format_duration(s.p99_jct_s),
            format_duration(s.avg_wait_s),
            format_duration(s.p99_wait_s),
            format_duration(s.makespan_s),
            f"{100 * s.gpu_allocation_rate:.1f}%",
            f"{s.preemptions:,}",
            f"{s.avg_slowdown:.2f}",
            f"{s.max_ftf_rho:.2f}",
            _fmt_ratio(_ratio(s.avg_jct_s, bounds.avg_jct_s)),
            _fmt_ratio(_ratio(s.makespan_s, bounds.makespan_s)),
        )
    table.add_section()
    table.add_row(
        "lower bound",
        "",
        format_duration(bounds.avg_jct_s),
        "",
        "",
        "",
        "",
        format_duration(bounds.makespan_s),
        "",
        "",
        "",
        "",
        "1.00×",
        "1.00×",
        style="dim",
    )
    return table


def comparison_json(summaries: dict[str, PolicySummary], bounds: Bounds) -> dict[str, Any]:
    """{"policies": {name: to_json_dict}, "bounds": {...}, "ratios": {name: {"avg_jct", "makespan"}}}.

    A ratio is null when its bound is zero (an empty trace).
    """
    return {
        "policies": {name: to_json_dict(s) for name, s in summaries.items()},
        "bounds": {"avg_jct_s": bounds.avg_jct_s, "makespan_s": bounds.makespan_s},
        "ratios": {
            name: {
                "avg_jct": _ratio(s.avg_jct_s, bounds.avg_jct_s),
                "makespan": _ratio(s.makespan_s, bounds.makespan_s),
            }
            for name, s in summaries.items()
        },
    }
