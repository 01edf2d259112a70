"""No starvation: a 64-GPU gang behind an endless stream of 1-GPU jobs starts within a stated bound.

The cluster: 10 nodes × 8 GPUs (two racks). From t=0 a 1-GPU job arrives every 20 s, each
running a random 600..3000 s (seeded), none with a time limit: the cluster offers 80 / 1800 s ≈
0.044 starts per second and the stream asks 0.05, so it is full from about t=1600 on and a backlog
grows. At t=4000 a gang of 8 nodes × 8 GPUs arrives (its own queue). The stream lasts to t=20,000.

Nothing ever frees 8 whole nodes by itself: each finishing job is replaced at once. The gang
starts only because EASY backfill reserves nodes for it and lets them drain. Without time limits
the reservation's start cannot be bounded, so it is taken once the gang has waited
`reserve_unbounded_after_s` (R); from then on no stream job starts on the reserved nodes (the
reservation keeps the same nodes: their jobs only age), so they are empty once the jobs already on
them end, at most `D_MAX` later. The bound checked, under the default `corral` policy:

    start ≤ submit + R + D_MAX + tick_s

(tick_s: the simulator's periodic cycle, an upper bound on the time to the next cycle.) With
default time limits (the cluster file's `default_time_limit_s`, applied to each job at its
arrival as the live controller applies it at submission) the reservation is bounded at once and
R plays no part:

    start ≤ submit + min(D_MAX, LIMIT) + tick_s

And with R = ∞ (no unbounded reservations, the old default) the gang never starts while the
stream lasts: that is the starvation the finite default removes.
"""

from __future__ import annotations

import random

from scheduler.model.job import JobSpec
from scheduler.model.queue import ClusterConfig
from scheduler.policy.config import PolicyConfig
from scheduler.sim.records import RunResult, TraceJob
from scheduler.sim.runner import SimOptions, Simulator
from tests.builders import cluster, default_queues, run_bounded

NODES = cluster(racks=2, nodes_per_rack=5)  # 80 GPUs
GAP_S = 20.0
D_MIN, D_MAX = 600.0, 3000.0
STREAM_END = 20_000.0
GANG_AT = 4000.0
LIMIT = 4000.0  # default time limit: above every stream job's duration, so none times out
TICK_S = SimOptions().tick_s


def stream(seed: int = 7) -> list[TraceJob]:
    rng = random.Random(seed)
    jobs = [
        TraceJob(f"s{i:05d}", i * GAP_S, rng.uniform(D_MIN, D_MAX), JobSpec(queue="small"))
        for i in range(int(STREAM_END / GAP_S))
    ]
    gang = TraceJob("gang", GANG_AT, 3600.0, JobSpec(queue="big", nodes=8, gpus_per_node=8))
    return [*jobs, gang]


def simulate(policy: PolicyConfig, default_limit: float | None = None) -> RunResult:
    queues = tuple(default_queues(NODES, (), ("small", "big")))
    world = ClusterConfig(nodes=tuple(NODES), queues=queues, default_time_limit_s=default_limit)
    sim = Simulator(world, stream(), policy, SimOptions(record_spans=True))
    return run_bounded(sim, max_cycles=50_000)


def gang_start(result: RunResult) -> float:
    return next(s.start for s in result.spans if s.job_id == "gang")


def full_until(result: RunResult, t: float) -> bool:
    """Fewer than 8 GPUs (one node) were free at every moment from t=2000 to t."""
    points = [p for p in result.timeline if 2000 <= p.time < t]
    return bool(points) and all(p.allocated_gpus > 80 - 8 for p in points)


def test_without_time_limits_the_gang_starts_within_r_plus_the_longest_job() -> None:
    policy = PolicyConfig()
    r = policy.reserve_unbounded_after_s
    result = simulate(policy)
    start = gang_start(result)
    assert full_until(result, GANG_AT + r)  # the stream alone never left a node free
    assert start <= GANG_AT + r + D_MAX + TICK_S, (start, GANG_AT + r + D_MAX + TICK_S)
    assert start < STREAM_END
    # Every stream job still ran (none starved behind the reservation either).
    assert len(result.records) == len(stream())


def test_with_default_time_limits_the_gang_starts_within_the_longest_job() -> None:
    result = simulate(PolicyConfig(), default_limit=LIMIT)
    start = gang_start(result)
    assert start <= GANG_AT + min(D_MAX, LIMIT) + TICK_S, start
    assert all(r.end_state == "SUCCEEDED" for r in result.records)  # the limit never cut a job short


def test_never_reserving_unbounded_starves_the_gang() -> None:
    result = simulate(PolicyConfig(reserve_unbounded_after_s=float("inf")))
    assert gang_start(result) >= STREAM_END  # it starts only once the stream has dried up
