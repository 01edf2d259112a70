"""The simulator: trace arrivals and SimBackend events on a virtual clock, decide() in between.

It keeps the same indexes a live controller keeps (pending jobs per queue in policy order, the
running allocations, free GPUs, queue usage) and lends them to each cycle's snapshot; decide()
never changes them, and they change only between cycles, when the plan is applied.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from sortedcontainers import SortedKeyList

from scheduler.backends.base import BackendEvent, EventKind
from scheduler.backends.sim import SimBackend
from scheduler.clock import VirtualClock
from scheduler.model.capacity import CapacityIndex
from scheduler.model.cluster import Node, NodeState
from scheduler.model.job import Job, JobSpec, JobState
from scheduler.model.pending_shapes import PendingShapes
from scheduler.model.plan import Place, Plan, Preempt, Reject
from scheduler.model.queue import ClusterConfig, with_defaults
from scheduler.model.running_pools import RunningPools
from scheduler.model.snapshot import ClusterSnapshot, RunningJob, gpus_by_type, pool_shapes
from scheduler.policy import explain
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from scheduler.policy.order import las_level, order_signature, pending_key
from scheduler.policy.usage import DecayedUsage
from scheduler.sim.gc_window import FewerCollections
from scheduler.sim.invariants import check_invariants
from scheduler.sim.records import (
    AllocationSpan,
    JobRecord,
    PreemptionRecord,
    RunResult,
    TimelinePoint,
    TraceJob,
)


@dataclass(frozen=True, slots=True)
class SimOptions:
    checkpoint_interval_s: float = 1800.0
    restart_overhead_s: float = 60.0
    tick_s: float = 300.0  # a periodic cycle while jobs wait (aging, LAS levels)
    # Decide at most once per this many virtual seconds; events in between wait for the next cycle,
    # as with a controller whose cycles are that far apart (0: a cycle after every event instant).
    cycle_interval_s: float = 0.0
    node_mtbf_s: float | None = None  # mean time between failures per node; None = no failures
    node_repair_s: float = 3600.0
    seed: int = 0
    validate: bool = False  # check every invariant after every event (tests)
    record_spans: bool = False


class SimObserver(Protocol):
    """Hooks for a recorder (e.g. `sim.metrics_out.SimMetrics`); none is called without one.

    An observer that never reads why jobs wait (a plan's `pending`, `fallback`, `examined`) says so
    with a class attribute `reads_reasons = False`: its replay then takes the shortcuts of a replay
    without an observer (model/pending_shapes.py)."""

    def before(self, sim: Simulator, t: float) -> None: ...  # the clock is about to move to t
    def submitted(self, job: Job) -> None: ...
    def changed(self, old: Job, new: Job) -> None: ...
    def cycled(self, sim: Simulator, seconds: float, plan: Plan) -> None: ...
    def finish(self, sim: Simulator) -> None: ...


_ARRIVAL = 0
_TICK = 1


class Simulator:
    """Replays `jobs` on `cluster` under one policy."""

    def __init__(
        self,
        cluster: ClusterConfig,
        jobs: Sequence[TraceJob],
        policy: PolicyConfig,
        options: SimOptions = SimOptions(),
        observer: SimObserver | None = None,
    ) -> None:
        self.cluster = cluster
        self.observer = observer
        self.policy = policy
        self.options = options
        self.clock = VirtualClock(0.0)
        self.trace = sorted(jobs, key=lambda j: (j.submit_time, j.job_id))
        self._durations = {j.job_id: j.duration for j in self.trace}
        self.backend = SimBackend(
            self.clock,
            cluster.nodes,
            self._durations,
            options.checkpoint_interval_s,
            options.restart_overhead_s,
        )
        self.queues = {q.name: q for q in cluster.queues}
        self.priority_classes = {p.name: p for p in cluster.priority_classes}
        priority_values = {p.name: p.value for p in cluster.priority_classes}
        self._key = pending_key(policy, priority_values)
        self.pending: dict[str, SortedKeyList] = {q: SortedKeyList(key=self._key) for q in self.queues}
        self.jobs: dict[str, Job] = {}
        self.running: dict[str, RunningJob] = {}
        # Bumped at every change of `running`: cycles reuse what they derived from it until then.
        self.running_version = 0
        self._running_pools = RunningPools()  # `running` by pool, for the cycles (see the module)
        self._memo: dict[object, object] = {}
        # When no observer reads why a job waits, a cycle may pass over the jobs whose
        # outcome it already knows and stop once no pending job left can change anything
        # (model/pending_shapes.py, policy/group_walk.py), which it tells from these.
        thresholds = policy.las_thresholds_gpu_s
        self._shapes = (
            PendingShapes(
                thresholds,
                lambda attained: las_level(attained, thresholds),
                self._key,
                order_signature(policy, priority_values),
            )
            if observer is None or not getattr(observer, "reads_reasons", True)
            else None
        )
        self.nodes: dict[str, Node] = {n.id: n for n in cluster.nodes}
        self.capacity = CapacityIndex.build(self.nodes.values())
        self._refresh_topology()
        self.queue_usage: dict[str, dict[str, int]] = {}
        self.usage = {q: DecayedUsage(policy.usage_half_life_s) for q in self.queues}
        self.result = RunResult(policy=policy.name, total_gpus=cluster.total_gpus)
        self._trace_by_id = {j.job_id: j for j in self.trace}
        self._time_limit_defaults = cluster.default_time_limit_s is not None or any(
            q.default_time_limit_s is not None for q in cluster.queues
        )
        self._first_start: dict[str, float] = {}
        self._allocated = 0
        self._tick_at = math.inf
        self._last_cycle_at = -math.inf
        self._finished = 0

    # --- main loop ------------------------------------------------------------------------------
    def run(
        self,
        on_progress: Callable[[int, int], None] | None = None,
        *,
        until: float = math.inf,
        done: Callable[[], bool] | None = None,
    ) -> RunResult:
        """Replay to the end; or stop before the first moment past `until`, or once `done()` holds
        after a cycle (a forecast stops there: see scheduler/forecast)."""
        with FewerCollections():
            return self._run(on_progress, until, done)

    def _run(
        self,
        on_progress: Callable[[int, int], None] | None,
        until: float,
        done: Callable[[], bool] | None,
    ) -> RunResult:
        wall = time.perf_counter()
        self._schedule_failures()
        next_arrival = 0
        total = len(self.trace)
        stopped = False  # by `until` or `done`: what is left is not a leftover
        while True:
            t_arrival = self.trace[next_arrival].submit_time if next_arrival < total else math.inf
            t = min(t_arrival, self.backend.next_time(), self._tick_at)
            if t == math.inf:
                break
            if t > until:
                stopped = True
                break
            if self.observer is not None:
                self.observer.before(self, t)
            self.clock.advance_to(t)
            changed = False
            while next_arrival < total and self.trace[next_arrival].submit_time <= t:
                self._arrive(self.trace[next_arrival])
                next_arrival += 1
                changed = True
            for event in self.backend.poll():
                changed = self._on_event(event) or changed
            if self._tick_at <= t:
                self._tick_at = math.inf
                changed = True
            slot = self._last_cycle_at + self.options.cycle_interval_s
            if changed and t < slot:  # too soon after the last cycle: decide at the next slot
                self._tick_at = min(self._tick_at, slot)
                changed = False
            if changed:
                self._cycle()
                if on_progress is not None:
                    on_progress(self._finished, total)
                if done is not None and done():
                    stopped = True
                    break
            if self.options.validate:
                self.validate()
            if next_arrival >= total and not self.running and not any(self.pending.values()):
                break
        self.result.wall_s = time.perf_counter() - wall
        if not stopped:
            self._leftovers()
        if self.observer is not None:
            self.observer.finish(self)
        return self.result

    def snapshot(self) -> ClusterSnapshot:
        now = self.clock.now()
        by_pool, changes = self._running_pools.lend()
        return ClusterSnapshot(
            nodes=self.nodes,
            capacity=self.capacity,
            queues=self.queues,
            priority_classes=self.priority_classes,
            pending=self.pending,
            running=self.running,
            queue_usage=self.queue_usage,
            usage_history={q: u.value_at(now) for q, u in self.usage.items()},
            gpus_by_type=self._gpus_by_type,
            pool_shapes=self._pool_shapes,
            running_version=self.running_version,
            memo=self._memo,
            running_by_pool=by_pool,
            running_changes=changes,
            pending_shapes=self._shapes,
        )

    def validate(self) -> None:
        check_invariants(self)

    def first_start(self, job_id: str) -> float | None:
        """When the job first started in this run (or before it, for a seeded job); None if not yet."""
        return self._first_start.get(job_id)

    def seed(
        self,
        now: float,
        nodes: Sequence[Node],
        running: Sequence[tuple[RunningJob, float]],
        pending: Sequence[tuple[Job, float]],
        usage: Mapping[str, float],
    ) -> None:
        """Start from a cluster's state at `now` instead of an empty one: its nodes, its running jobs
        with the seconds each still needs (inf: unknown, never ends), its pending jobs with their
        runtimes, and each queue's decayed usage. Call once, before run(); the first cycle is at `now`.
        """
        self.clock.advance_to(now)
        self.nodes = {n.id: n for n in nodes}
        for q, value in usage.items():
            if q in self.usage:
                self.usage[q] = DecayedUsage(self.policy.usage_half_life_s, value=value, at=now)
        for r, remaining in running:
            job = r.job
            if job.state is JobState.STARTING:
                job = job.model_copy(update={"state": JobState.RUNNING})
            self._seed_job(job, remaining)
            self._set_running(
                job.id, RunningJob(job, r.allocation, r.pool, r.started_at, r.checkpoint_interval_s)
            )
            self._first_start[job.id] = job.first_started_at or r.started_at
            self._charge(job.spec.queue, r.gpu_type, r.gpus, now)
            self.backend.adopt(job, r.allocation, remaining)
            if job.state is JobState.PREEMPTING:
                self.backend.stop(job, job.spec.grace_period_s)
        for job, runtime in pending:
            if job.spec.queue in self.pending:
                self._seed_job(job.model_copy(update={"runtime_hint_s": runtime}), runtime)
                self._pend(self.jobs[job.id])
        self._rebuild_capacity()
        self._tick_at = now

    def _seed_job(self, job: Job, duration: float) -> None:
        self.jobs[job.id] = job
        self._durations[job.id] = duration
        self._trace_by_id[job.id] = TraceJob(job.id, job.submitted_at, duration, job.spec)

    # --- events -----------------------------------------------------------------------------------
    def _arrive(self, trace_job: TraceJob) -> None:
        job = Job(
            id=trace_job.job_id,
            spec=self._accepted(trace_job),
            team=trace_job.spec.queue,
            submitted_at=trace_job.submit_time,
            runtime_hint_s=trace_job.duration,
        )
        self.jobs[job.id] = job
        if self.observer is not None:
            self.observer.submitted(job)
        if job.spec.queue not in self.pending:
            self._finish(job, JobState.FAILED, reason="unknown queue")
            return
        self._pend(job)

    def _accepted(self, trace_job: TraceJob) -> JobSpec:
        """The spec as the live controller accepts it: with its queue's or the cluster's default
        time limit when it has none (so both run the same jobs)."""
        if not self._time_limit_defaults:
            return trace_job.spec
        return with_defaults(trace_job.spec, self.cluster)

    def _on_event(self, event: BackendEvent) -> bool:
        if event.kind is EventKind.STARTED:
            job = self.jobs[event.job_id]
            if job.state is JobState.STARTING:
                job = job.transition(JobState.RUNNING)
                self._set(job)
                self._set_running(job.id, _with_job(self.running[job.id], job))
            return False
        if event.kind is EventKind.NODE_LOST:
            self._node_lost(event.node)
            return True
        if event.kind is EventKind.NODE_JOINED:
            self.nodes[event.node] = self.nodes[event.node].model_copy(update={"state": NodeState.READY})
            self._rebuild_capacity()
            return True
        job = self.jobs[event.job_id]
        if job.id not in self.running:
            return False
        if event.kind is EventKind.EXITED:
            self._release(job, "completed")
            state = JobState.SUCCEEDED if event.exit_code == 0 else JobState.FAILED
            self._finish(self.jobs[job.id], state)
        elif event.kind is EventKind.TIMED_OUT:
            self._release(job, "timeout")
            self._finish(self.jobs[job.id], JobState.TIMEOUT)
        elif event.kind is EventKind.STOPPED:
            self._release(job, "preempted")
            self._requeue(self.jobs[job.id], preempted=True)
        return True

    def _node_lost(self, node_id: str) -> None:
        self.nodes[node_id] = self.nodes[node_id].model_copy(update={"state": NodeState.DOWN})
        victims = [r for r in self.running.values() if node_id in r.allocation.node_ids]
        for r in victims:
            self._release(r.job, "node_failure")
            self._requeue(self.jobs[r.id], preempted=False)
        self._rebuild_capacity()

    # --- cycles -----------------------------------------------------------------------------------
    def _cycle(self) -> None:
        now = self.clock.now()
        self._last_cycle_at = now
        observer = self.observer
        t0 = time.perf_counter() if observer is not None else 0.0
        plan = decide(self.snapshot(), self.policy, now)
        if observer is not None:
            observer.cycled(self, time.perf_counter() - t0, plan)
        self.result.cycles += 1
        self._apply(plan, now)
        pending = sum(len(p) for p in self.pending.values())
        point = TimelinePoint(now, self._allocated, pending, len(self.running))
        timeline = self.result.timeline
        if timeline and timeline[-1].time == now:
            timeline[-1] = point
        elif not timeline or _counts(timeline[-1]) != _counts(point):
            timeline.append(point)
        if pending and self._tick_at == math.inf:
            self._tick_at = now + self.options.tick_s

    def _apply(self, plan: Plan, now: float) -> None:
        for decision in plan.decisions:
            if isinstance(decision, Place):
                self._start(self.jobs[decision.job_id], decision, now)
            elif isinstance(decision, Preempt):
                job = self.jobs[decision.job_id]
                if job.state in (JobState.RUNNING, JobState.STARTING):
                    self._attribute(decision, self.running[job.id], now)
                    job = job.transition(JobState.PREEMPTING)
                    self._set(job)
                    self._set_running(job.id, _with_job(self.running[job.id], job))
                    self.result.preemptions += 1
                    self.backend.stop(job, job.spec.grace_period_s)
            elif isinstance(decision, Reject):
                job = self.jobs[decision.job_id]
                self._unpend(job)
                self._finish(job, JobState.FAILED, reason=decision.reason)

    def _attribute(self, decision: Preempt, victim: RunningJob, now: float) -> None:
        """Record who preempted whom, by which rule and at what loss, in the words the live
        controller writes to the victim's history."""
        self.result.preemption_log.append(
            PreemptionRecord(
                now,
                decision.job_id,
                decision.for_job,
                decision.rule,
                explain.why_preempted(decision.rule, victim, now),
                explain.preempted_by(decision.for_job, decision.reason),
                explain.work_lost(victim, now).seconds,
            )
        )

    def _start(self, job: Job, place: Place, now: float) -> None:
        self._unpend(job)
        alloc = place.allocation
        self.capacity = self.capacity.allocate(alloc)
        first_node = self.nodes[alloc.nodes[0].node]
        gpu_type = first_node.gpu_type
        job = job.transition(JobState.STARTING, started_at=now, first_started_at=job.first_started_at or now)
        self._set(job)
        self._first_start.setdefault(job.id, now)
        self._set_running(
            job.id, RunningJob(job, alloc, first_node.pool, now, self.options.checkpoint_interval_s)
        )
        self._charge(job.spec.queue, gpu_type, alloc.gpus, now)
        self.backend.start(job, alloc)

    def _release(self, job: Job, end_reason: str) -> None:
        r = self.running.pop(job.id)
        self._running_pools.remove(r)
        self.running_version += 1
        now = self.clock.now()
        self.capacity = self.capacity.release(r.allocation)
        self._charge(r.queue, r.gpu_type, -r.gpus, now)
        current = self.jobs[job.id]
        attained = current.attained_gpu_s + r.gpus * max(0.0, now - r.started_at)
        self._set(current.model_copy(update={"attained_gpu_s": attained}))
        if self.options.record_spans:
            self.result.spans.append(
                AllocationSpan(
                    job.id,
                    r.started_at,
                    now,
                    end_reason,
                    tuple(
                        (
                            na.node,
                            self.nodes[na.node].region,
                            self.nodes[na.node].rack,
                            self.nodes[na.node].gpu_type,
                            na.gpus,
                        )
                        for na in r.allocation.nodes
                    ),
                )
            )

    def _requeue(self, job: Job, preempted: bool) -> None:
        job = job.transition(
            JobState.PENDING,
            restart_count=job.restart_count + 1,
            preemption_count=job.preemption_count + (1 if preempted else 0),
        )
        self._set(job)
        self._pend(job)

    def _finish(self, job: Job, state: JobState, reason: str = "") -> None:
        """End a job; only jobs that ran get a record (rejected ones are counted apart)."""
        now = self.clock.now()
        job = job.transition(state, finished_at=now)
        self._set(job)
        self._finished += 1
        if job.id not in self._first_start:
            if job.id not in self.result.rejected:
                self.result.rejected.append(job.id)
            return
        trace_job = self._trace_by_id[job.id]
        first = self._first_start.get(job.id, now)
        self.result.records.append(
            JobRecord(
                job_id=job.id,
                queue=job.spec.queue,
                gpus=job.spec.gpus,
                submit_time=job.submitted_at,
                first_start=first,
                finish_time=now,
                duration=trace_job.duration,
                preemptions=job.preemption_count,
                end_state=state.value,
            )
        )

    # --- bookkeeping ----------------------------------------------------------------------------
    def _set(self, job: Job) -> None:
        if self.observer is not None:
            self.observer.changed(self.jobs[job.id], job)
        self.jobs[job.id] = job

    def _pend(self, job: Job) -> None:
        self.pending[job.spec.queue].add(job)
        if self._shapes is not None:
            self._shapes.add(job)

    def _unpend(self, job: Job) -> None:
        self.pending[job.spec.queue].remove(job)
        if self._shapes is not None:
            self._shapes.remove(job)

    def _set_running(self, job_id: str, running: RunningJob) -> None:
        self._running_pools.put(self.running.get(job_id), running)
        self.running[job_id] = running
        self.running_version += 1

    def _charge(self, queue: str, gpu_type: str, gpus: int, now: float) -> None:
        per_type = self.queue_usage.setdefault(queue, {})
        per_type[gpu_type] = per_type.get(gpu_type, 0) + gpus
        self._allocated += gpus
        usage = self.usage.get(queue)
        if usage is not None:
            usage.change(now, gpus)

    def _rebuild_capacity(self) -> None:
        self.capacity = CapacityIndex.build(
            self.nodes.values(), (r.allocation for r in self.running.values())
        )
        self._refresh_topology()

    def _refresh_topology(self) -> None:
        self._gpus_by_type = gpus_by_type(self.nodes.values())
        self._pool_shapes = pool_shapes(self.nodes.values())

    def _schedule_failures(self) -> None:
        mtbf = self.options.node_mtbf_s
        if mtbf is None or not self.trace:
            return
        rng = random.Random(self.options.seed)
        horizon = self.trace[-1].submit_time + sum(j.duration for j in self.trace) / max(1, len(self.nodes))
        for node_id in sorted(self.nodes):
            t = rng.expovariate(1.0 / mtbf)
            while t < horizon:
                self.backend.fail_node(node_id, t, self.options.node_repair_s)
                t += self.options.node_repair_s + rng.expovariate(1.0 / mtbf)

    def _leftovers(self) -> None:
        """Jobs still waiting when nothing more can happen (e.g. every node down): count as failed."""
        for queue in self.pending.values():
            for job in list(queue):
                self._finish(job, JobState.FAILED, reason="never scheduled")
            queue.clear()
        if self._shapes is not None:
            self._shapes.groups.clear()


def _counts(p: TimelinePoint) -> tuple[int, int, int]:
    return (p.allocated_gpus, p.pending_jobs, p.running_jobs)


def _with_job(r: RunningJob, job: Job) -> RunningJob:
    return RunningJob(job, r.allocation, r.pool, r.started_at, r.checkpoint_interval_s)
