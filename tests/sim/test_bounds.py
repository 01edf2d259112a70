"""Lower bounds: hand-computed SRPT and makespan cases, and checks against feasible schedules."""

from __future__ import annotations

import heapq
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model.job import JobSpec
from scheduler.sim.bounds import (
    Bounds,
    avg_jct_lower_bound,
    compute_bounds,
    makespan_lower_bound,
    srpt_mean_flow_time,
)
from scheduler.sim.records import TraceJob


def _jobs(*rows: tuple[float, float, int]) -> list[TraceJob]:
    """(submit, duration, gpus) rows as TraceJobs (single-node jobs; specs shared, they are frozen)."""
    specs: dict[int, JobSpec] = {}
    return [
        TraceJob(
            job_id=f"j{i}", submit_time=s, duration=d, spec=specs.setdefault(g, JobSpec(gpus_per_node=g))
        )
        for i, (s, d, g) in enumerate(rows)
    ]


def test_srpt_by_hand() -> None:
    # C = 4 GPUs; (submit, dur, gpus) = (0,10,4), (1,1,4), (2,1,4): work/C = 10, 1, 1.
    # t=0: A runs (rem 10). t=1: A has 9 left, B arrives with 1 → B runs 1→2, flow 1.
    # t=2: C arrives with 1 < 9 → C runs 2→3, flow 1. A resumes 3→12, flow 12.
    # Mean flow = (12 + 1 + 1) / 3 = 14/3 > mean runtime 4.
    jobs = _jobs((0, 10, 4), (1, 1, 4), (2, 1, 4))
    assert avg_jct_lower_bound(jobs, 4) == pytest.approx(14 / 3)


def test_srpt_preempts_for_shorter_arrival_and_handles_ties() -> None:
    # Unit server. (0, 5), (1, 2), (1, 2): at t=1 A has 4 left; the two 2-jobs run 1→3 and 3→5,
    # A finishes at 9. Flows: 9, 2, 4 → mean 5.
    assert srpt_mean_flow_time([(0, 5), (1, 2), (1, 2)]) == pytest.approx(5.0)
    # Idle gap between jobs: (0, 1) and (10, 1) → flows 1 and 1.
    assert srpt_mean_flow_time([(10, 1), (0, 1)]) == pytest.approx(1.0)
    assert srpt_mean_flow_time([]) == 0.0
    # Zero-length jobs complete on arrival.
    assert srpt_mean_flow_time([(0, 0), (0, 0)]) == 0.0


def test_mean_runtime_dominates_when_cluster_is_wide() -> None:
    # C = 8, two 1-GPU jobs of 10 s at t=0: SRPT flows 1.25 and 2.5 (mean 1.875) < mean runtime 10.
    jobs = _jobs((0, 10, 1), (0, 10, 1))
    assert avg_jct_lower_bound(jobs, 8) == pytest.approx(10.0)


def test_makespan_bound_by_hand() -> None:
    # Work from t=0: 40 + 4 + 4 = 48 GPU-s on 4 GPUs → 12 s, more than max(submit+dur) = 10.
    assert makespan_lower_bound(_jobs((0, 10, 4), (1, 1, 4), (2, 1, 4)), 4) == pytest.approx(12.0)
    # A long late job: max(submit+dur) = 5 + 100 = 105 beats the work bounds 101/8 and 5 + 100/8.
    assert makespan_lower_bound(_jobs((0, 1, 1), (5, 100, 1)), 8) == pytest.approx(105.0)
    # A burst later in the trace: from t=10, 4 jobs × 8 GPUs × 10 s on 8 GPUs = 40 s → 50;
    # measured from the first submit (t=2): 48.
    jobs = _jobs((2, 1, 1), (10, 10, 8), (10, 10, 8), (10, 10, 8), (10, 10, 8))
    assert makespan_lower_bound(jobs, 8) == pytest.approx(48.0)


def test_empty_and_invalid() -> None:
    assert compute_bounds([], 8) == Bounds(avg_jct_s=0.0, makespan_s=0.0)
    with pytest.raises(ValueError):
        avg_jct_lower_bound(_jobs((0, 1, 1)), 0)
    with pytest.raises(ValueError):
        makespan_lower_bound(_jobs((0, 1, 1)), -1)


def test_compute_bounds() -> None:
    b = compute_bounds(_jobs((0, 10, 4), (1, 1, 4), (2, 1, 4)), 4)
    assert b.avg_jct_s == pytest.approx(14 / 3)
    assert b.makespan_s == pytest.approx(12.0)


@pytest.mark.timeout(120)  # a wedge guard (a quadratic pass would not end), not a speed target
def test_hundred_thousand_jobs_have_bounds() -> None:
    rng = random.Random(7)
    t = 0.0
    rows = []
    for _ in range(100_000):
        t += rng.expovariate(1 / 30)
        rows.append((t, rng.lognormvariate(7, 2), rng.choice((1, 2, 4, 8))))
    jobs = _jobs(*rows)
    b = compute_bounds(jobs, 512)
    assert b.avg_jct_s >= sum(duration for _, duration, _ in rows) / len(rows)  # no job beats its run
    assert b.makespan_s >= max(t + duration for t, duration, _ in rows) - rows[0][0]


# ---------------------------------------------------------------------------------------------------
# Property checks against schedules that are feasible on the real cluster.


def _reference_srpt(arrivals: list[tuple[float, float]]) -> float:
    """A slow, independent SRPT: step from event to event, picking the least remaining work."""
    remaining = {i: p for i, (_, p) in enumerate(arrivals)}
    done: dict[int, float] = {}
    now = min((a for a, _ in arrivals), default=0.0)
    while remaining:
        ready = [i for i in remaining if arrivals[i][0] <= now]
        future = [arrivals[i][0] for i in remaining if arrivals[i][0] > now]
        if not ready:
            now = min(future)
            continue
        i = min(ready, key=lambda k: (remaining[k], k))
        next_arrival = min(future, default=float("inf"))
        run = min(remaining[i], next_arrival - now)
        now += run
        remaining[i] -= run
        if remaining[i] <= 1e-12:
            del remaining[i]
            done[i] = now
    return sum(done[i] - arrivals[i][0] for i in done) / len(arrivals) if arrivals else 0.0


def _fifo_schedule(jobs: list[TraceJob], total_gpus: int) -> list[tuple[float, float]]:
    """(start, finish) per job of strict-FIFO gang scheduling on `total_gpus` GPUs (feasible)."""
    running: list[tuple[float, int]] = []  # (finish, gpus)
    free = total_gpus
    last_start = float("-inf")
    out = []
    for job in sorted(jobs, key=lambda j: j.submit_time):
        t = max(job.submit_time, last_start)
        while running and running[0][0] <= t:
            free += heapq.heappop(running)[1]
        while free < job.spec.gpus:
            finish, g = heapq.heappop(running)
            t = max(t, finish)
            free += g
        free -= job.spec.gpus
        heapq.heappush(running, (t + job.duration, job.spec.gpus))
        last_start = t
        out.append((job.submit_time, t + job.duration))
    return out


_row = st.tuples(
    st.integers(min_value=0, max_value=100).map(float),
    st.floats(min_value=0.0, max_value=50.0, allow_nan=False, allow_infinity=False),
    st.integers(min_value=1, max_value=8),
)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(_row, min_size=1, max_size=25), total_gpus=st.integers(min_value=8, max_value=32))
def test_bounds_below_feasible_fifo_schedule(rows: list[tuple[float, float, int]], total_gpus: int) -> None:
    jobs = _jobs(*rows)
    schedule = _fifo_schedule(jobs, total_gpus)
    fifo_avg_jct = sum(f - s for s, f in schedule) / len(schedule)
    fifo_makespan = max(f for _, f in schedule) - min(s for s, _ in schedule)
    b = compute_bounds(jobs, total_gpus)
    assert b.avg_jct_s <= fifo_avg_jct * (1 + 1e-9) + 1e-9
    assert b.makespan_s <= fifo_makespan * (1 + 1e-9) + 1e-9
    # ... and never below the trivial bounds they are built from.
    first = min(j.submit_time for j in jobs)
    assert b.avg_jct_s >= sum(j.duration for j in jobs) / len(jobs) - 1e-9
    assert b.makespan_s >= max(j.submit_time + j.duration for j in jobs) - first - 1e-9
    assert b.makespan_s >= sum(j.spec.gpus * j.duration for j in jobs) / total_gpus - 1e-9


@settings(max_examples=150, deadline=None)
@given(
    arrivals=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=50).map(float),
            st.integers(min_value=0, max_value=20).map(float),
        ),
        max_size=20,
    )
)
def test_srpt_matches_reference(arrivals: list[tuple[float, float]]) -> None:
    assert srpt_mean_flow_time(arrivals) == pytest.approx(_reference_srpt(arrivals), abs=1e-9)
