"""The live controller: one thread that turns submissions, backend events and time into plans.

Each step: pick up new submissions and cancel requests from the store, take the backend's events,
run decide() over an immutable snapshot when anything changed (or periodically, for aging and time
limits), commit every change of the step in ONE store transaction, and only then start and stop
jobs. The controller is the only writer of job state; the API writes submissions and cancel
requests, which the controller reads back through Store.changed_since().
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from scheduler import faults
from scheduler.backends.base import Backend, BackendEvent, EventKind
from scheduler.clock import Clock
from scheduler.config.live import LiveConfig
from scheduler.control.reconcile import reconcile, unexpected
from scheduler.control.relabel import region_change, stop_outside_region
from scheduler.control.spec_check import check_spec
from scheduler.control.suggestions import SuggestionWorker
from scheduler.control.transitions import (
    Effect,
    Release,
    Start,
    Step,
    Stop,
    apply_plan,
    check_time_limits,
    holds_gpus,
    in_backoff,
    on_backend_event,
    on_cancel_request,
    reject,
    with_node_regions,
)
from scheduler.metrics import Metrics
from scheduler.model.cluster import ANY, Node, NodeState, PoolKey
from scheduler.model.job import Job, JobSpec, JobState
from scheduler.model.plan import Allocation, NodeAllocation, Place, Plan, Reject
from scheduler.model.queue import with_defaults
from scheduler.model.records import AuditRecord, Batch, Cordon, JobRecord, UsageRecord
from scheduler.model.snapshot import ClusterSnapshot, RunningJob
from scheduler.policy.decide import decide
from scheduler.policy.order import pending_key
from scheduler.policy.suggest import Suggestion
from scheduler.policy.usage import DecayedUsage
from scheduler.store import controller_state
from scheduler.store.errors import LockLost
from scheduler.store.store import Store
from scheduler.view import (
    ClusterView,
    DryRun,
    NodeStatus,
    NotReady,
    QueueStatus,
    ReplayInputs,
    SchedulingState,
    empty_view,
)

log = logging.getLogger("corral.controller")

STOP_WATCHDOG_S = 60.0  # slack after a grace period before a stop is issued again
CORDON_AFTER_START_FAILURES = 3  # failed starts in a row blamed on one node before it is cordoned
# Ray's free GPUs are sampled every ~0.5 s: GPUs Ray still holds just after Corral freed them are
# withheld for a moment, so look again soon; a difference that outlives this is drift, and logged.
DRIFT_RECHECK_S = 0.5
ORPHAN_SWEEP_S = 30.0  # how often the leader looks for attempts Ray runs that the store does not expect
DRIFT_GRACE_S = 30.0
SETTLING_S = 10.0  # GPUs Corral freed this recently that Ray still holds: Ray is releasing them

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


class Fence(Protocol):
    """The controller's right to act (scheduler/store/lease.py): checked before it acts, and
    inside each of its write transactions."""

    def check(self) -> None:
        """Raise LockLost unless this process may still act as the leader."""
        ...

    def verify(self, connection: Connection) -> None:
        """Inside a write transaction: raise LockLost (refusing the write) unless still the leader."""
        ...


class Helper(Protocol):
    """Something that runs beside the controller while it leads (the start-time forecaster)."""

    def start(self) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...


class LiveBackend(Backend, Protocol):
    """A Backend that can also be reconciled after a controller restart (RayBackend)."""

    def attempt_pairs(self) -> Collection[tuple[str, int]]: ...

    def adopt(self, job: Job, allocation: Allocation) -> None: ...

    def remove(self, job_id: str, attempt: int) -> None: ...

    def release(self, job_id: str, attempt: int) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Inputs:
    """What the last snapshot was built from (immutable), kept for dry runs from the API."""

    nodes: tuple[Node, ...]
    pending: tuple[Job, ...]
    running: tuple[RunningJob, ...]
    usage: Mapping[str, float]
    withheld: Allocation | None = None  # free GPUs Ray does not have free (see _withhold_drift)
    settling: Allocation | None = None  # the part of them Ray is still releasing (young drift)
    running_version: int = -1  # changes whenever `running` does (see Controller._running_of)


class Controller:
    def __init__(
        self,
        store: Store,
        backend: LiveBackend,
        config: LiveConfig,
        clock: Clock,
        *,
        poll_s: float = 0.1,
        full_cycle_s: float = 5.0,
        min_decide_interval_s: float = 0.05,
        metrics: Metrics | None = None,
        job_info_metrics: bool = False,
        fence: Fence | None = None,
        on_fatal: Callable[[str], None] | None = None,
        suggest_interval_s: float = 5.0,
        team_queues: Callable[[], Mapping[str, Collection[str] | None]] | None = None,
    ) -> None:
        self.store = store
        self.backend = backend
        self.config = config
        self.clock = clock
        self.poll_s = poll_s
        self.full_cycle_s = full_cycle_s
        self.min_decide_interval_s = min_decide_interval_s
        self.metrics = metrics or Metrics()
        self.job_info_metrics = job_info_metrics
        self.fence = fence
        self.on_fatal = on_fatal  # called once if the controller must stop for good (lost its lock)
        self.fatal = ""
        self._dirty = True
        self.queues = {q.name: q for q in config.cluster.queues}
        self.priority_classes = {p.name: p for p in config.cluster.priority_classes}
        self._key = pending_key(config.policy, {p.name: p.value for p in config.cluster.priority_classes})
        self._records: dict[str, JobRecord] = {}
        self._seq = 0
        self._usage = {q: DecayedUsage(config.policy.usage_half_life_s) for q in self.queues}
        self._held: dict[str, int] = {}
        self._usage_dirty: set[str] = set()  # queues whose usage changed since the last commit
        self._cordons: dict[str, Cordon] = {}
        self._reread_cordons = False
        self._start_failures: dict[str, int] = {}  # node → failed starts in a row blamed on it
        self._residency_conflicts: dict[str, str] = {}  # node → why (audited, committed)
        self._next_retry = float("inf")  # earliest retry_at of a job in start backoff
        self._drift: dict[str, int] = {}  # node → GPUs Corral counts free that Ray does not
        self._drift_since: dict[str, float] = {}
        self._free_seen: dict[str, int] = {}  # node → its free GPUs by Corral's books, last cycle
        self._freed_at: dict[str, float] = {}  # node → when Corral last freed GPUs there
        self._recheck_at = float("inf")
        # Nodes the cluster file declares count as known from the start: one that is absent (or
        # dies while this controller restarts) shows as DOWN, and jobs for its region wait for it.
        self._known_nodes: dict[str, Node] = {n.id: n for n in config.cluster.nodes}
        self._node_key: tuple[tuple[str, str], ...] = ()
        self._last_decide = 0.0
        self._last_sweep = 0.0
        self._suspects: set[tuple[str, int]] = set()  # unexpected at the last sweep
        self.orphans_removed = 0
        self._retry: list[BackendEvent] = []
        self._stop_reissued: dict[str, float] = {}
        self._lock = threading.Lock()
        self._view = empty_view(tuple(self.priority_classes.values()))
        self._inputs = _Inputs((), (), (), {})
        # Across cycles, as the simulator does (ClusterSnapshot.memo): what decide() derives from
        # the running jobs alone is reused while they are the same objects. A running job's
        # RunningJob is rebuilt only when its record or its node's pool changed.
        self._memo: dict[object, object] = {}
        self._running_built: dict[str, tuple[JobRecord, PoolKey, RunningJob]] = {}
        self._running_last: Sequence[RunningJob] = ()
        self._running_version = 0
        self._state: SchedulingState | None = None  # what the last cycle decided over
        self._estimates: Mapping[str, float | None] = {}  # the latest forecast's, from a helper
        self._helpers: list[Helper] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Counterfactual reasons ("fits now with --gpus 8"), on their own thread, off the cycle.
        self.suggester = SuggestionWorker(
            config.policy, min_interval_s=suggest_interval_s, team_queues=team_queues
        )
        self.cycles = 0
        self.store_errors = 0
        self.last_step_at = 0.0
        self.last_error = ""
        self.last_cycle_s = 0.0

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Reconcile the store with the backend, then run the loop in a daemon thread."""
        if hasattr(self.backend, "on_event"):
            self.backend.on_event = self.wake  # backend events wake the loop at once
        self.metrics.attach(
            self,
            leader=lambda: self._thread is not None and self._thread.is_alive(),
            job_info=self.job_info_metrics,
            audit=self.store,
        )
        self.metrics.initialize(self.queues, {n.region for n in self._known_nodes.values()})
        if self.fence is not None:
            self.fence.check()
        self.store.sync_queues(
            list(self.queues.values()),
            fence=self.fence.verify if self.fence is not None else None,
            config=self._config_document(),  # audited when it differs from the last one audited
            now=self.clock.now(),
        )
        self.recover()
        self._thread = threading.Thread(target=self._run, name="corral-controller", daemon=True)
        self._thread.start()
        self.suggester.start()
        for helper in self._helpers:
            helper.start()

    def attach(self, helper: Helper) -> None:
        """Run `helper` beside the controller: started after it, stopped before it."""
        self._helpers.append(helper)

    def _config_document(self) -> dict[str, object]:
        """What the config change audit covers: the queues, priority classes, policy and declared nodes."""
        cluster = self.config.cluster
        return {
            "queues": [q.model_dump(mode="json") for q in self.queues.values()],
            "priority_classes": [p.model_dump(mode="json") for p in cluster.priority_classes],
            "policy": self.config.policy.model_dump(mode="json"),
            "nodes": [n.model_dump(mode="json") for n in cluster.nodes],
        }

    def stop(self, timeout: float = 10.0) -> None:
        for helper in self._helpers:
            helper.stop(timeout)
        self._stopping.set()
        self._wake.set()
        self.suggester.stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def recover(self) -> None:
        now = self.clock.now()
        self._seq = self.store.change_counter()  # first: a job submitted meanwhile is read again, not lost
        self._restore_usage()
        self._cordons = controller_state.cordons(self.store)
        active = self.store.active()
        alive = list(self.backend.attempt_pairs())
        result = reconcile(active, alive, now)
        self._records = {r.id: r for r in active}
        for rec in active:
            current = result.step.records.get(rec.id, rec)
            if current.cancel_requested_at is not None and not current.state.terminal:
                on_cancel_request(current, now, result.step)  # a cancel recorded before the restart
        for rec in result.adopt:
            assert rec.allocation is not None
            self.backend.adopt(rec.job, rec.allocation)
        for job_id, attempt in result.orphans:
            log.warning("removing orphaned attempt %s of job %s", attempt, job_id)
            self.backend.remove(job_id, attempt)
        self._commit(result.step)
        log.info(
            "recovered %d active jobs: %d adopted, %d orphans removed",
            len(active),
            len(result.adopt),
            len(result.orphans),
        )

    def _sweep_orphans(self, now: float) -> None:
        """Remove what Ray runs that the store does not expect, as recover() does at start-up: a
        leader paused while it created a placement group can finish creating it after it was fenced
        (the chaos suite saw one left behind until the next restart). Only what was unexpected at
        two sweeps in a row goes: one sweep can catch an attempt that just ended while Ray still
        tears it down (a start is committed to the store, so expected, before Ray has it)."""
        self._last_sweep = now
        found = unexpected(list(self._records.values()), self.backend.attempt_pairs())
        for job_id, attempt in sorted(found & self._suspects):
            if self.fence is not None:
                self.fence.check()  # a leader paused mid-sweep must not remove its successor's starts
            log.warning("removing attempt %s of job %s: Ray runs it, the store expects none", attempt, job_id)
            self.backend.remove(job_id, attempt)
            self.orphans_removed += 1
        self._suspects = found - self._suspects

    def _restore_usage(self) -> None:
        """Fair share as the store last had it: usage decays on from there, and the GPUs queues held
        kept counting while no controller ran (their jobs kept running)."""
        half_life = self.config.policy.usage_half_life_s
        for queue, saved in controller_state.usage(self.store).items():
            if queue in self._usage:
                self._usage[queue] = DecayedUsage(half_life, value=saved.value, at=saved.at, gpus=saved.gpus)
                self._held[queue] = saved.gpus

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                self.step()
            except LockLost as exc:
                # Another controller may be writing now: stop deciding at once, for good.
                self.fatal = f"lost the controller lease: {exc}"
                log.critical("%s; stopping the controller", self.fatal)
                self._stopping.set()
                if self.on_fatal is not None:
                    self.on_fatal(self.fatal)
                return
            except Exception as exc:  # the loop must survive a store outage; resync from the store
                self.store_errors += 1
                self.metrics.store_errors.inc()
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("controller step failed; reloading state from the store")
                time.sleep(min(1.0, self.poll_s * 5))
                try:
                    self._records = {r.id: r for r in self.store.active()}
                except Exception:
                    log.exception("store still unavailable")

    # --- one step ---------------------------------------------------------------------------------
    def step(self) -> None:
        if self.fence is not None:
            self.fence.check()  # a leader that was paused past its lease acts no more
        now = self.clock.now()
        seq0 = self._seq
        events = self._retry + self.backend.poll()
        self._retry = []
        try:
            self._step(now, events)
        except Exception:
            # Nothing of this step was committed: read its submissions, cancels and events again.
            self._seq = seq0
            self._retry = events
            self._dirty = True
            raise
        self.last_step_at = now
        self.last_error = ""

    def _step(self, now: float, events: list[BackendEvent]) -> None:
        step = Step()
        changed = self._take_submissions(now, step)
        for event in events:
            if event.job_id:
                self._count_start(event, now, step)
                on_backend_event(self._current(step), event, now, step)
            changed = True
        if now >= self._next_retry or now >= self._recheck_at:
            changed = True  # a start backoff ended, or Ray's view of freed GPUs may have caught up
        if self._reread_cordons or now - self._last_decide >= self.full_cycle_s:
            self._reread_cordons = False
            self._cordons = controller_state.cordons(self.store)  # an admin may have changed them
        if now - self._last_sweep >= ORPHAN_SWEEP_S:
            self._sweep_orphans(now)
        nodes = self._nodes(step, now)
        residency_conflicts = self._audit_residency_conflicts(nodes, now, step)
        self._watch_stops(now, step)
        self._dirty = self._dirty or changed or bool(step)
        since = now - self._last_decide
        # Coalesce a burst of submissions into one cycle per interval: decide() over a deep queue
        # is the costly part, and it shares the process (and the GIL) with the API. The interval
        # grows with the cycle's cost, so cycles take at most about a fifth of the process' time.
        interval = (
            max(self.min_decide_interval_s, 4.0 * self.last_cycle_s)
            if self.min_decide_interval_s > 0
            else 0.0
        )  # 0: no coalescing (tests on a virtual clock)
        if (self._dirty and since >= interval) or since >= self.full_cycle_s:
            self._dirty = False
            check_time_limits(list(self._current(step).values()), now, step)
            self._decide(nodes, now, step)
        self._commit(step)
        self._residency_conflicts = residency_conflicts  # audited: committed with the step

    def _watch_stops(self, now: float, step: Step) -> None:
        """Re-issue a stop that has not completed long after its grace period (a lost backend task)."""
        for rec in self._records.values():
            if rec.stop_reason is None or rec.stop_requested_at is None or not holds_gpus(rec):
                continue
            due = rec.stop_requested_at + rec.job.spec.grace_period_s + STOP_WATCHDOG_S
            last = self._stop_reissued.get(rec.id, 0.0)
            if now >= due and now - last >= STOP_WATCHDOG_S:
                log.warning("stop of job %s not done after its grace period: issuing it again", rec.id)
                self._stop_reissued[rec.id] = now
                step.effects.append(Stop(rec.job, 0.0))

    def _count_start(self, event: BackendEvent, now: float, step: Step) -> None:
        """Count failed starts per node; cordon a node after CORDON_AFTER_START_FAILURES in a row,
        instead of placing and requeuing jobs there without end."""
        rec = step.records.get(event.job_id) or self._records.get(event.job_id)
        if rec is None or rec.job.restart_count != event.attempt:
            return
        if event.kind is EventKind.STARTED and rec.allocation is not None:
            for node in rec.allocation.node_ids:
                step.node_failures[node] = 0
            return
        if event.kind is not EventKind.START_FAILED or rec.stop_reason is not None:
            return
        step.failed_starts.append(rec.job.spec.queue)
        if not event.node:
            return
        failures = step.node_failures.get(event.node, self._start_failures.get(event.node, 0)) + 1
        step.node_failures[event.node] = failures
        if failures < CORDON_AFTER_START_FAILURES or self._cordoned(event.node, step):
            return
        why = f"{failures} starts in a row failed on it; last: {event.message or 'no cause given'}"
        step.cordons.append(Cordon(event.node, why, now))
        step.node_failures[event.node] = 0
        log.warning("cordoning node %s: %s (`corral uncordon %s` when fixed)", event.node, why, event.node)
        step.note(rec, "NODE_CORDONED", now, f"node {event.node} cordoned: {why}", node=event.node)
        step.audit.append(AuditRecord(now, "", "cordon", 0, nodes=(event.node,), detail=why))

    def _audit_residency_conflicts(self, nodes: Mapping[str, Node], now: float, step: Step) -> dict[str, str]:
        """Nodes the backend took out of scheduling because their region labels disagree (or cannot
        be checked; scheduler/kube): audit each conflict when it starts and when it clears, once
        (kept only once the step is committed), and export how many there are now."""
        conflicts_of = getattr(self.backend, "conflicts", None)
        conflicts: dict[str, str] = dict(conflicts_of()) if callable(conflicts_of) else {}
        self.metrics.residency_conflicts.set(len(conflicts))
        for node_id in sorted(conflicts.keys() | self._residency_conflicts.keys()):
            why, before = conflicts.get(node_id), self._residency_conflicts.get(node_id)
            if why == before:
                continue
            node = nodes.get(node_id)
            regions = (node.region,) if node is not None else ()
            if why is None:
                log.warning("node %s: data-residency conflict cleared (was: %s)", node_id, before)
                step.audit.append(
                    AuditRecord(
                        now,
                        "",
                        "residency_conflict_cleared",
                        0,
                        nodes=(node_id,),
                        node_regions=regions,
                        detail=f"cleared; was: {before}",
                    )
                )
            elif before is None:
                log.warning("node %s taken out of scheduling: data-residency conflict: %s", node_id, why)
                step.audit.append(
                    AuditRecord(
                        now,
                        "",
                        "residency_conflict",
                        0,
                        nodes=(node_id,),
                        node_regions=regions,
                        residency_ok=False,
                        detail=why,
                    )
                )
            else:  # still in conflict, for another reason: keep the first audit entry
                conflicts[node_id] = before
        return conflicts

    def _cordoned(self, node: str, step: Step) -> bool:
        return node in self._cordons or any(c.node == node for c in step.cordons)

    def _current(self, step: Step) -> dict[str, JobRecord]:
        if not step.records:
            return self._records
        return {**self._records, **step.records}

    def _take_submissions(self, now: float, step: Step) -> bool:
        fresh, self._seq = self.store.changed_since(self._seq)
        for rec in fresh:
            known = self._records.get(rec.id)
            if known is None:
                if rec.state.terminal:
                    continue
                known = rec
                self._records[rec.id] = rec
                self.metrics.observe_submitted(rec)
            elif rec.cancel_requested_at is not None and known.cancel_requested_at is None:
                known = replace(
                    known, cancel_requested_at=rec.cancel_requested_at, cancel_grace_s=rec.cancel_grace_s
                )
                self._records[rec.id] = known
            if known.cancel_requested_at is not None:
                on_cancel_request(known, now, step)
        return bool(fresh)

    def _nodes(self, step: Step, now: float) -> dict[str, Node]:
        """The backend's nodes (cordoned ones DRAINING), plus every node seen before that has left,
        as DOWN. A node whose region changed is a new node: the jobs there outside their data region
        are stopped and requeued (scheduler/control/relabel.py).

        A failed node stays in the snapshot: its jobs' GPUs are accounted until they are stopped,
        and jobs for its region wait for it to come back instead of being rejected as impossible.
        """
        nodes = {
            n.id: n.model_copy(update={"state": NodeState.DRAINING})
            if self._cordoned(n.id, step) and n.state is NodeState.READY
            else n
            for n in self.backend.nodes()
        }
        self._stop_outside_region(nodes, now, step)
        self._known_nodes.update(nodes)
        for node_id, node in self._known_nodes.items():
            if node_id not in nodes:
                nodes[node_id] = node.model_copy(update={"state": NodeState.DOWN})
        for rec in self._records.values():
            if rec.allocation is not None:
                for na in rec.allocation.nodes:
                    if na.node not in nodes:  # left before this controller process ever saw it
                        nodes[na.node] = _unseen_node(na.node, rec, max(na.gpus) + 1)
        return nodes

    def _stop_outside_region(self, nodes: Mapping[str, Node], now: float, step: Step) -> None:
        current = self._current(step)
        change = region_change(self._known_nodes, nodes, current.values())
        for node_id, (old, new) in change.moved.items():
            log.warning("node %s changed region from %s to %s: scheduled as a new node", node_id, old, new)
            step.node_failures[node_id] = 0  # failed starts were counted against the old node
        for stop in change.stops:
            log.warning("stopping job %s: node %s is now outside its data region", stop.job_id, stop.node)
            stop_outside_region(current[stop.job_id], stop, now, step)

    def _decide(self, nodes: dict[str, Node], now: float, step: Step) -> None:
        current = self._current(step)
        for rec in current.values():
            if rec.state is JobState.PENDING and rec.job.spec.queue not in self.queues:
                # Its queue left the configuration while it waited: it can never run.
                reject(rec, f"queue {rec.job.spec.queue!r} no longer exists", now, step)
        current = self._current(step)
        inputs = self._snapshot_inputs(current, nodes, now)
        snapshot = self._snapshot(inputs)
        # Only this thread's cycles share the memo (dry runs and suggestions decide without it).
        memoized = replace(
            snapshot,
            priority_classes=self.priority_classes,  # by identity: the memo checks it
            running_version=inputs.running_version,
            memo=self._memo,
        )
        t0 = time.perf_counter()
        ray_free = self._ray_free(fresh=False)
        base = snapshot  # nothing withheld yet
        inputs, snapshot, plan = self._decide_with(inputs, base, memoized, ray_free, now)
        placed = {na.node for d in plan.decisions if isinstance(d, Place) for na in d.allocation.nodes}
        if ray_free is not None and placed:
            # Placements are checked against Ray's view read now, after this cycle's jobs were: the
            # cached one may predate GPUs another Ray driver took (it lags by seconds on a loaded
            # host). If Ray has fewer free on a node placed on, the cycle is decided again on that
            # view (once, without the memo); more free takes nothing from what was placed.
            fresh = self._ray_free(fresh=True)
            assert fresh is not None
            if any(fresh.get(n, math.inf) < ray_free.get(n, math.inf) for n in placed):
                inputs, snapshot, plan = self._decide_with(inputs, base, None, fresh, now)
        self.last_cycle_s = time.perf_counter() - t0
        self.metrics.observe_cycle(self.last_cycle_s, plan)
        self.cycles += 1
        self._last_decide = now
        apply_plan(current, plan, nodes, now, step, snapshot.running)
        self._charge(self._current(step).values(), now)  # placements count from now
        state = SchedulingState(now, inputs.nodes, inputs.pending, inputs.running, inputs.usage)
        with self._lock:
            self._inputs = inputs
            self._state = state
        # this step's new cordons are not committed yet, but its nodes already read DRAINING
        cordons = {**self._cordons, **{c.node: c for c in step.cordons}}
        self._publish(snapshot, self._current(step), nodes, now, step.pending_reasons, cordons)
        self.suggester.offer(snapshot, plan, now, self.cycles)  # computed later, on its own thread

    def _snapshot_inputs(
        self, current: Mapping[str, JobRecord], nodes: Mapping[str, Node], now: float
    ) -> _Inputs:
        pending: list[Job] = []
        running: list[RunningJob] = []
        self._next_retry = float("inf")
        for rec in current.values():
            if rec.state is JobState.PENDING and rec.cancel_requested_at is None:
                if in_backoff(rec, now):
                    assert rec.retry_at is not None
                    self._next_retry = min(self._next_retry, rec.retry_at)
                    continue
                pending.append(rec.job)
            elif holds_gpus(rec):
                assert rec.allocation is not None
                job = rec.job
                if rec.stop_reason is not None and job.state is not JobState.PREEMPTING:
                    job = job.model_copy(update={"state": JobState.PREEMPTING})  # leaving: its GPUs free soon
                first = next((nodes[n] for n in rec.allocation.node_ids if n in nodes), None)
                if first is None:  # never: _nodes() includes every node an allocation names
                    raise RuntimeError(f"job {rec.id} holds GPUs on unknown nodes")
                running.append(self._running_of(rec, job, first.pool, now))
        self._charge(current.values(), now)
        usage = {q: u.value_at(now) for q, u in self._usage.items()}
        version = self._running_changed(running)
        return _Inputs(tuple(nodes.values()), tuple(pending), tuple(running), usage, running_version=version)

    def _running_of(self, rec: JobRecord, job: Job, pool: PoolKey, now: float) -> RunningJob:
        """The job's RunningJob: the same object as last cycle while its record and pool are."""
        built = self._running_built.get(rec.id)
        if built is not None and built[0] is rec and built[1] == pool:
            return built[2]
        assert rec.allocation is not None  # it holds GPUs
        running = RunningJob(job, rec.allocation, pool, job.started_at or now)
        if job.started_at is not None:  # else its start is `now`, a new one each cycle
            self._running_built[rec.id] = (rec, pool, running)
        return running

    def _running_changed(self, running: Sequence[RunningJob]) -> int:
        """The running-jobs version for this cycle: bumped when any RunningJob differs (by
        identity) from last cycle's, or the set changed."""
        last = self._running_last
        if len(last) != len(running) or any(a is not b for a, b in zip(last, running, strict=True)):
            self._running_last = tuple(running)
            self._running_version += 1
            live = {r.id for r in running}
            for gone in [k for k in self._running_built if k not in live]:
                del self._running_built[gone]
        return self._running_version

    def _snapshot(self, inputs: _Inputs, extra: Sequence[Job] = ()) -> ClusterSnapshot:
        snapshot = ClusterSnapshot.build(
            inputs.nodes,
            self.queues.values(),
            self.priority_classes.values(),
            [*inputs.pending, *extra],
            inputs.running,
            usage_history=inputs.usage,
            pending_key=self._key,
        )
        if inputs.withheld is not None:
            snapshot = replace(
                snapshot,
                capacity=snapshot.capacity.allocate(inputs.withheld),
                settling=inputs.settling,
            )
        return snapshot

    def _decide_with(
        self,
        inputs: _Inputs,
        base: ClusterSnapshot,
        memoized: ClusterSnapshot | None,
        ray_free: Mapping[str, float] | None,
        now: float,
    ) -> tuple[_Inputs, ClusterSnapshot, Plan]:
        """One decision on `base` (a snapshot with nothing withheld, or its `memoized` twin), less
        the free GPUs Ray does not have free by `ray_free`: the inputs and snapshot it was made
        on, and the plan."""
        withheld, settling = self._withhold_drift(base, now, ray_free)
        inputs = replace(inputs, withheld=withheld, settling=settling)
        snapshot, decided = base, memoized if memoized is not None else base
        if withheld is not None:
            snapshot = replace(base, capacity=base.capacity.allocate(withheld), settling=settling)
            decided = replace(decided, capacity=snapshot.capacity, settling=settling)
        return inputs, snapshot, decide(decided, self.config.policy, now)

    def _ray_free(self, fresh: bool) -> Mapping[str, float] | None:
        """What Ray has free per node, if the backend says (RayBackend): its cached view, or
        (`fresh`) one read now."""
        read = getattr(self.backend, "read_available_gpus" if fresh else "available_gpus", None)
        if not callable(read) and fresh:
            read = getattr(self.backend, "available_gpus", None)
        return read() if callable(read) else None

    def _withhold_drift(
        self, snapshot: ClusterSnapshot, now: float, ray_free: Mapping[str, float] | None
    ) -> tuple[Allocation | None, Allocation | None]:
        """The free GPUs (by Corral's accounting) that Ray does not have free, to take out of the
        cycle's capacity: a node's free GPUs are the minimum of the two views. A difference that
        lasts is drift (something outside Corral holds GPUs): logged and exported. Second, the part
        of them still young: GPUs Ray is still releasing, which the cycle counts as free soon (a
        job that preempted for them waits for them instead of preempting elsewhere)."""
        withheld: list[NodeAllocation] = []
        drift: dict[str, int] = {}
        for node_id, free_in_ray in (ray_free or {}).items():
            free = snapshot.capacity.free_on(node_id)
            short = len(free) - max(0, int(free_in_ray))
            if short > 0:
                drift[node_id] = short
                withheld.append(NodeAllocation(node=node_id, gpus=tuple(sorted(free)[-short:])))
        for node_id, short in drift.items():
            since = self._drift_since.setdefault(node_id, now)
            if now - since >= DRIFT_GRACE_S and self._drift.get(node_id, 0) != short:
                log.warning(
                    "GPU accounting drift on node %s: Corral counts %d more GPUs free than Ray does "
                    "for %.0f s (held outside Corral?); placing as if they were taken",
                    node_id,
                    short,
                    now - since,
                )
        for node_id in list(self._drift_since):
            if node_id not in drift:
                del self._drift_since[node_id]
        # Export only what has lasted past the grace (a freed placement group takes a moment to go).
        self._drift = {n: d for n, d in drift.items() if now - self._drift_since[n] >= DRIFT_GRACE_S}
        # Ray catching up is a difference on a node where Corral itself just freed GPUs; GPUs that
        # something outside Corral took are a shortage like any other ("Resources").
        for node_id in snapshot.nodes:
            count = len(snapshot.capacity.free_on(node_id))
            if count > self._free_seen.get(node_id, count):
                self._freed_at[node_id] = now
            self._free_seen[node_id] = count
        settling = tuple(
            na
            for na in withheld
            if now - self._drift_since[na.node] < DRIFT_GRACE_S
            and now - self._freed_at.get(na.node, -math.inf) < SETTLING_S
        )
        self._recheck_at = now + DRIFT_RECHECK_S if settling else float("inf")
        return (
            Allocation(nodes=tuple(withheld)) if withheld else None,
            Allocation(nodes=settling) if settling else None,
        )

    def _charge(self, records: Collection[JobRecord], now: float) -> None:
        """Fair-share usage: each queue is charged for the GPUs its jobs hold, from the moment they
        are placed (called before and after each cycle) to the moment their end is taken in."""
        held: dict[str, int] = {}
        for rec in records:
            if holds_gpus(rec):
                assert rec.allocation is not None
                held[rec.job.spec.queue] = held.get(rec.job.spec.queue, 0) + rec.allocation.gpus
        for queue, usage in self._usage.items():
            delta = held.get(queue, 0) - self._held.get(queue, 0)
            if delta:
                usage.change(now, delta)
                self._usage_dirty.add(queue)
        self._held = held

    def _commit(self, step: Step) -> None:
        """One transaction for the whole step, then the effects (never before the commit)."""
        dirty = sorted(self._usage_dirty)
        if not step and not dirty:
            return
        usage = [
            UsageRecord(q, self._usage[q].value, self._usage[q].at, self._usage[q].gpus)
            for q in dirty
            if q in self._usage
        ]
        batch = Batch(
            updates=list(step.records.values()),
            events=step.events,
            audit=[with_node_regions(a, self._known_nodes) for a in step.audit],
            pending_reasons=step.pending_reasons,
            usage=usage,
            cordons=step.cordons,
        )
        if batch:
            if self.fence is not None:
                self.fence.check()  # never write (or start anything) without holding the lease
            self.store.apply(batch, fence=self.fence.verify if self.fence is not None else None)
        self._usage_dirty.difference_update(dirty)
        for node, failures in step.node_failures.items():
            if failures:
                self._start_failures[node] = failures
            else:
                self._start_failures.pop(node, None)
        self._cordons.update({c.node: c for c in step.cordons})
        self._count(step)
        for job_id, rec in step.records.items():
            if rec.state.terminal or rec.stop_reason is None:
                self._stop_reissued.pop(job_id, None)
            if rec.state.terminal:
                self._records.pop(job_id, None)
            else:
                self._records[job_id] = rec
        for job_id, reason in step.pending_reasons.items():
            waiting = self._records.get(job_id)
            if waiting is not None:
                self._records[job_id] = replace(waiting, pending_reason=reason)
        if any(isinstance(e, Start) for e in step.effects):
            faults.crash_point("after_commit")  # chaos tests only: placed, not yet started
        for effect in step.effects:
            self._carry_out(effect)

    def _count(self, step: Step) -> None:
        """Metrics for what was just committed (never for a step that failed)."""
        for queue in step.failed_starts:
            self.metrics.observe_start_failure(queue)
        for job_id, rec in step.records.items():
            old = self._records.get(job_id)
            if old is not None:
                self.metrics.observe_change(old, rec)
        for entry in step.audit:
            if entry.decision == "place-refused" or (
                entry.decision == "reject" and entry.detail.startswith("RegionCapacity")
            ):
                self.metrics.observe_residency_refusal(entry.data_region)

    def _carry_out(self, effect: Effect) -> None:
        try:
            if isinstance(effect, Start):
                self.backend.start(effect.job, effect.allocation)
            elif isinstance(effect, Stop):
                self.backend.stop(effect.job, effect.grace_s)
            else:
                self.backend.release(effect.job_id, effect.attempt)
        except Exception as exc:
            job_id = effect.job_id if isinstance(effect, Release) else effect.job.id
            log.exception("backend refused %s of job %s", type(effect).__name__, job_id)
            if isinstance(effect, Start):  # treat as a failed start: the next step requeues it
                self._retry.append(
                    BackendEvent(
                        EventKind.START_FAILED,
                        self.clock.now(),
                        effect.job.id,
                        effect.job.restart_count,
                        message=f"the backend refused the start: {_one_line(exc)}",
                    )
                )
            self.last_error = f"{type(exc).__name__}: {exc}"

    # --- what the API sees --------------------------------------------------------------------------
    def _publish(
        self,
        snapshot: ClusterSnapshot,
        current: Mapping[str, JobRecord],
        nodes: Mapping[str, Node],
        now: float,
        reasons: Mapping[str, str | None],
        cordons: Mapping[str, Cordon],
    ) -> None:
        used: dict[str, int] = {}
        jobs_on: dict[str, list[str]] = {}
        q_used: dict[str, dict[str, int]] = {}
        q_running: dict[str, int] = {}
        q_pending: dict[str, int] = {}
        by_state: dict[tuple[str, str], int] = {}
        by_reason: dict[tuple[str, str], int] = {}
        job_queues: dict[str, str] = {}
        for rec in current.values():
            queue = rec.job.spec.queue
            key = (queue, rec.state.value)
            by_state[key] = by_state.get(key, 0) + 1
            if rec.state is JobState.PENDING:
                q_pending[queue] = q_pending.get(queue, 0) + 1
                message = reasons.get(rec.id, rec.pending_reason)
                code = (message or "WaitingForScheduling").split(":", 1)[0]
                by_reason[(queue, code)] = by_reason.get((queue, code), 0) + 1
            if not holds_gpus(rec):
                continue
            assert rec.allocation is not None
            q_running[queue] = q_running.get(queue, 0) + 1
            job_queues[rec.id] = queue
            for na in rec.allocation.nodes:
                used[na.node] = used.get(na.node, 0) + len(na.gpus)
                jobs_on.setdefault(na.node, []).append(rec.id)
                gpu_type = nodes[na.node].gpu_type if na.node in nodes else "?"
                by_type = q_used.setdefault(queue, {})
                by_type[gpu_type] = by_type.get(gpu_type, 0) + len(na.gpus)
        queue_status = [
            QueueStatus.of(
                q,
                q_used.get(name, {}),
                q_pending.get(name, 0),
                q_running.get(name, 0),
                snapshot.usage_history,
            )
            for name, q in self.queues.items()
        ]
        positions: dict[str, int] = {}
        for jobs in snapshot.pending.values():
            pos = 0
            for job in jobs:
                entry = current.get(job.id)
                if entry is not None and entry.state is JobState.PENDING:
                    pos += 1
                    positions[job.id] = pos
        view = ClusterView(
            nodes=tuple(
                NodeStatus(
                    n,
                    used.get(n.id, 0),
                    tuple(jobs_on.get(n.id, ())),
                    self._drift.get(n.id, 0),
                    cordons[n.id].reason if n.id in cordons else "",
                )
                for n in sorted(nodes.values(), key=lambda n: n.id)
            ),
            queues=tuple(queue_status),
            priority_classes=tuple(self.priority_classes.values()),
            time=now,
            queue_positions=positions,
            jobs_by_state=by_state,
            pending_by_reason=by_reason,
            job_queues=job_queues,
        )
        with self._lock:
            self._view = replace(view, estimated_starts=self._estimates)

    def scheduling_state(self) -> SchedulingState | None:
        """The state the last cycle decided over (None before the first): what a forecast replays."""
        with self._lock:
            return self._state

    def replay_inputs(self) -> ReplayInputs:
        state = self.scheduling_state()
        if state is None:
            raise NotReady("the controller is starting and has not seen the cluster yet; retry")
        return ReplayInputs(state, self.config.cluster, self.config.policy)

    def set_estimates(self, starts: Mapping[str, float | None]) -> None:
        """Publish a forecast's start-time estimates (pending job id → unix time, None: unknown)."""
        with self._lock:
            self._estimates = starts
            self._view = replace(self._view, estimated_starts=starts)

    def view(self) -> ClusterView:
        with self._lock:
            return self._view

    def check_spec(self, spec: JobSpec) -> JobSpec:
        view = self.view()
        if self.cycles == 0:  # its first cycle has not seen the nodes yet (a start, a takeover)
            raise NotReady("the controller is starting and has not seen the cluster yet; retry")
        if not view.nodes:  # Ray listed none yet (overloaded at a takeover): not the spec's fault
            raise NotReady("the controller sees no nodes in the cluster yet; retry")
        check_spec(
            spec,
            [n.node for n in view.nodes],
            list(self.queues.values()),
            list(self.priority_classes.values()),
        )
        return with_defaults(spec, self.config.cluster)

    def dry_run(self, spec: JobSpec, team: str) -> DryRun:
        with self._lock:
            inputs = self._inputs
        now = self.clock.now()
        probe = Job(id="dry-run", spec=spec, team=team, submitted_at=now)
        plan = decide(self._snapshot(inputs, [probe]), self.config.policy, now)
        for decision in plan.decisions:
            if isinstance(decision, Place) and decision.job_id == probe.id:
                return DryRun(allocation=decision.allocation, pending_reason=None)
            if isinstance(decision, Reject) and decision.job_id == probe.id:
                return DryRun(allocation=None, pending_reason=None, rejected=decision.reason)
        return DryRun(allocation=None, pending_reason=plan.reason_for(probe.id).message)

    def suggestions(self, job_id: str) -> Sequence[Suggestion]:
        return self.suggester.get(job_id)

    def wake(self) -> None:
        self._wake.set()

    def cordons_changed(self) -> None:
        self._reread_cordons = True
        self._dirty = True
        self._wake.set()

    def health(self) -> Mapping[str, str]:
        """Each check done now: the loop is alive and stepping, the store answers a query, the
        backend answers a call (Ray: its GCS). Anything but "ok" means not ready."""
        now = self.clock.now()
        alive = self._thread is not None and self._thread.is_alive()
        lag = now - self.last_step_at
        if self.fatal:
            controller = self.fatal
        elif not alive:
            controller = "stopped"
        else:
            controller = "ok" if lag < 10 else f"stalled for {lag:.0f} s"
        try:
            controller_state.ping(self.store)
            store = "ok"
        except Exception as exc:
            store = f"unreachable: {_one_line(exc)}"
        backend_health = getattr(self.backend, "health", None)
        ray = str(backend_health()) if callable(backend_health) else "ok"
        return {"controller": controller, "store": store, "ray": ray}

    def role(self) -> Mapping[str, object]:
        """A controller on its own (no Leadership around it) always leads."""
        epoch = getattr(self.fence, "epoch", 0)
        return {"leader": True, "epoch": epoch, "leader_url": getattr(self.fence, "api_url", "")}

    def records(self) -> Collection[JobRecord]:
        return tuple(self._records.values())


def _unseen_node(node_id: str, rec: JobRecord, min_gpus: int) -> Node:
    """A DOWN stand-in for a node a job holds GPUs on but the backend no longer reports (e.g. it died
    while the controller was restarting), so the job's GPUs stay accounted until it is stopped."""
    spec = rec.job.spec
    return Node(
        id=node_id,
        region=spec.data_region if spec.data_region != ANY else "unknown",
        rack=node_id,
        gpu_type=spec.gpu_type if spec.gpu_type != ANY else "unknown",
        gpus=max(min_gpus, spec.gpus_per_node),
        state=NodeState.DOWN,
    )


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
