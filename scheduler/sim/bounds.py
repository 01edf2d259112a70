"""Lower bounds on what any scheduler can achieve for a trace on a cluster of C GPUs.

A policy's average JCT or makespan means little alone; divided by a lower bound it says how far from
the best possible (for *any* policy, even a clairvoyant one) the run landed. Both bounds here are
relaxations: they drop constraints a real cluster has (gang placement on whole nodes, GPU types,
regions, quotas, restart cost), so the true optimum can lie above them, never below.

The bounds treat every job given as one that must run. Jobs a run rejected (e.g. more GPUs than the
cluster has) should be left out by the caller so the bounds describe the same jobs as the summary.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.sim.records import TraceJob


def _check_capacity(total_gpus: int) -> None:
    if total_gpus <= 0:
        raise ValueError(f"total_gpus must be positive, got {total_gpus}")


def srpt_mean_flow_time(arrivals: Sequence[tuple[float, float]]) -> float:
    """Mean flow time (completion − arrival) of preemptive SRPT on one unit-speed server.

    `arrivals` holds (arrival time, processing time) pairs in any order. Event-driven: between two
    arrivals the job with the least remaining work runs; jobs it finishes leave, and at an arrival the
    running job's remaining time is cut by the time it ran. O(n log n) with a binary heap.
    """
    n = len(arrivals)
    if n == 0:
        return 0.0
    order = sorted(arrivals)
    # heap entries: (remaining processing time, arrival time); ties in remaining time do not change
    # the total flow time, so no tie-breaker is needed beyond the arrival time.
    heap: list[tuple[float, float]] = []
    now = order[0][0]
    total_flow = 0.0
    for arrival, processing in order:
        # Run the shortest-remaining job(s) until this arrival.
        while heap and now + heap[0][0] <= arrival:
            remaining, arrived = heapq.heappop(heap)
            now += remaining
            total_flow += now - arrived
        if heap:
            # The top job ran for (arrival - now) and stays the smallest: decreasing the minimum key
            # keeps the heap property, so it can be replaced in place.
            remaining, arrived = heap[0]
            heap[0] = (max(remaining - (arrival - now), 0.0), arrived)
        now = max(now, arrival)
        heapq.heappush(heap, (max(processing, 0.0), arrival))
    while heap:
        remaining, arrived = heapq.heappop(heap)
        now += remaining
        total_flow += now - arrived
    return total_flow / n


def avg_jct_lower_bound(jobs: Sequence[TraceJob], total_gpus: int) -> float:
    """A lower bound on the average JCT any schedule of `jobs` on `total_gpus` GPUs can reach.

    It is the larger of two valid bounds:

    * the mean runtime: no job completes sooner than its own duration after it is submitted;
    * the mean flow time of preemptive SRPT on ONE server of speed C (= total_gpus) that must process
      each job's work w_j = gpus_j × duration_j, i.e. a processing time of w_j / C.

    Why the second is a bound (single-server relaxation): take any feasible schedule on the C GPUs.
    At every instant it processes work at a total rate of at most C (a running job j adds gpus_j), and
    no job gets work before its submit time. A single server of speed C that splits its capacity
    among jobs in the same proportions reproduces that schedule exactly, so every job finishes at the
    same time there. Hence the optimum mean flow time of the one-server problem with preemption
    (1 | r_j, pmtn | Σ F_j) is at most the cluster schedule's average JCT. SRPT is optimal for that
    problem (Schrage 1968; Smith 1978): at every time t it has completed as many jobs as any preemptive — even
    capacity-sharing — schedule can, so its mean flow time is the minimum. Gang constraints, node
    boundaries and the rule that a job runs at exactly gpus_j GPUs are all dropped, which only
    lowers the optimum. The maximum of two lower bounds is a lower bound.

    Returns 0.0 for an empty trace. O(n log n); 100,000 jobs take a fraction of a second.
    """
    _check_capacity(total_gpus)
    if not jobs:
        return 0.0
    mean_runtime = math.fsum(j.duration for j in jobs) / len(jobs)
    srpt = srpt_mean_flow_time([(j.submit_time, j.spec.gpus * j.duration / total_gpus) for j in jobs])
    return max(mean_runtime, srpt)


def makespan_lower_bound(jobs: Sequence[TraceJob], total_gpus: int) -> float:
    """A lower bound on the makespan (first submit → last finish) of any schedule on `total_gpus` GPUs.

    The larger of:

    * max_j (submit_j + duration_j): no job ends before it has been submitted and run;
    * max over submit times t of (t + W(t) / C), with W(t) the work (gpus × duration) of the jobs
      submitted at or after t: that work cannot start before t and the cluster does at most C
      GPU-seconds of work per second.

    Both are measured from the first submit. Returns 0.0 for an empty trace. O(n log n).
    """
    _check_capacity(total_gpus)
    if not jobs:
        return 0.0
    ordered = sorted(jobs, key=lambda j: j.submit_time)
    first = ordered[0].submit_time
    best = max(j.submit_time + j.duration for j in ordered)
    suffix_work = 0.0
    # Walk from the last submit backwards; at the first job of each run of equal submit times the
    # suffix holds exactly the work submitted at or after that time.
    for i in range(len(ordered) - 1, -1, -1):
        job = ordered[i]
        suffix_work += job.spec.gpus * job.duration
        if i == 0 or ordered[i - 1].submit_time != job.submit_time:
            best = max(best, job.submit_time + suffix_work / total_gpus)
    return max(best - first, 0.0)


@dataclass(frozen=True, slots=True)
class Bounds:
    """Lower bounds for one trace on one cluster size."""

    avg_jct_s: float
    makespan_s: float


def compute_bounds(jobs: Sequence[TraceJob], total_gpus: int) -> Bounds:
    """Both lower bounds for `jobs` on `total_gpus` GPUs."""
    return Bounds(
        avg_jct_s=avg_jct_lower_bound(jobs, total_gpus),
        makespan_s=makespan_lower_bound(jobs, total_gpus),
    )
