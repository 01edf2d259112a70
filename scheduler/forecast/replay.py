"""Start-time estimates: the live state replayed forward in the simulator under the whole policy.

`forecast_starts(state, cluster, policy, runtimes)` seeds a Simulator with the state the controller's
last cycle saw — its nodes, the running jobs with the seconds each still needs, the pending jobs with
their runtimes, every queue's decayed usage — and runs the same decide() on a virtual clock: fair
share, backfill and preemption play out as they would if nothing new arrived and every job ran for
its estimate (scheduler/forecast/runtimes.py). A pending job's estimate is when it first starts in
that replay.

Bounds (beyond them a job's estimate is None, "unknown"): the replay stops `horizon_s` after the
state's time, or once every followed job has started; at most `max_jobs` pending jobs take part,
the first in the policy's order (the others are behind them anyway, and get None).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from scheduler.forecast.runtimes import RuntimeModel
from scheduler.model.job import Job, JobState
from scheduler.model.queue import ClusterConfig
from scheduler.policy.config import PolicyConfig
from scheduler.policy.order import pending_key
from scheduler.sim.records import TraceJob
from scheduler.sim.runner import SimObserver, SimOptions, Simulator
from scheduler.view import SchedulingState

__all__ = ["Forecast", "ForecastOptions", "forecast_starts", "seeded_simulator"]


@dataclass(frozen=True, slots=True)
class ForecastOptions:
    horizon_s: float = 7 * 86400.0  # replay at most this far ahead
    max_jobs: int = 5000  # pending jobs replayed (the first in the policy's order)
    tick_s: float = 300.0  # the simulator's periodic cycle while jobs wait
    cycle_interval_s: float = 0.0  # decide at most this often (virtual s); 0: after every event
    checkpoint_interval_s: float = 1800.0
    restart_overhead_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Forecast:
    time: float  # the state's time
    starts: Mapping[str, float | None]  # pending job id → estimated start (None: unknown)
    wall_s: float  # how long the replay took
    replayed: int  # pending jobs that took part
    cycles: int


def seeded_simulator(
    state: SchedulingState,
    cluster: ClusterConfig,
    policy: PolicyConfig,
    runtimes: RuntimeModel,
    pending: list[Job],
    options: ForecastOptions,
    arrivals: Sequence[TraceJob] = (),
    observer: SimObserver | None = None,
    record_spans: bool = False,
) -> Simulator:
    """A Simulator at the state's time holding its nodes, running jobs and these pending jobs, to
    which `arrivals` (submitted at or after the state's time) come as in any replay."""
    now = state.time
    live = cluster.model_copy(update={"nodes": tuple(state.nodes)})
    sim_options = SimOptions(
        checkpoint_interval_s=options.checkpoint_interval_s,
        restart_overhead_s=options.restart_overhead_s,
        tick_s=options.tick_s,
        cycle_interval_s=options.cycle_interval_s,
        record_spans=record_spans,
    )
    sim = Simulator(live, list(arrivals), policy, sim_options, observer=observer)
    sim.seed(
        now,
        state.nodes,
        [(r, runtimes.running_remaining(r.job, r.started_at, now)) for r in state.running],
        [(job, runtimes.pending_runtime(job)) for job in pending],
        state.usage,
    )
    return sim


def forecast_starts(
    state: SchedulingState,
    cluster: ClusterConfig,
    policy: PolicyConfig,
    runtimes: RuntimeModel,
    options: ForecastOptions = ForecastOptions(),
    follow: Collection[str] | None = None,
) -> Forecast:
    """Each pending job's estimated start (see the module's docstring); with `follow`, only these
    jobs' (the replay stops once they have started; the others' estimates are then None)."""
    wall = time.perf_counter()
    key = pending_key(policy, {p.name: p.value for p in cluster.priority_classes})
    queues = {q.name for q in cluster.queues}
    ordered = sorted((j for j in state.pending if j.spec.queue in queues), key=key)
    replayed = ordered[: options.max_jobs]
    wanted = {j.id for j in replayed if follow is None or j.id in follow}
    tracker = _Follow(set(wanted))
    sim = seeded_simulator(state, cluster, policy, runtimes, replayed, options, observer=tracker)
    sim.run(until=state.time + options.horizon_s, done=tracker.done)
    starts: dict[str, float | None] = {j.id: None for j in state.pending}
    for job_id in wanted:
        starts[job_id] = sim.first_start(job_id)
    return Forecast(state.time, starts, time.perf_counter() - wall, len(replayed), sim.result.cycles)


class _Follow:
    """Counts the followed jobs that have not started yet (the replay stops when none is left)."""

    reads_reasons = False  # only starts: the replay may skip what explanations need (SimObserver)

    def __init__(self, job_ids: set[str]) -> None:
        self.waiting = job_ids

    def done(self) -> bool:
        return not self.waiting

    def before(self, sim: Simulator, t: float) -> None:
        pass

    def submitted(self, job: Job) -> None:
        pass

    def changed(self, old: Job, new: Job) -> None:
        if new.state is JobState.STARTING:
            self.waiting.discard(new.id)

    def cycled(self, sim: Simulator, seconds: float, plan: object) -> None:
        pass

    def finish(self, sim: Simulator) -> None:
        pass
