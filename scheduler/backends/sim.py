"""SimBackend: a virtual cluster whose jobs run for their trace durations on a virtual clock.

It models what a real cluster does to a job: a restart costs `restart_overhead_s`, progress is
saved every `checkpoint_interval_s` of work, a stop (preemption) or a node loss throws away the
work since the last checkpoint, and a time limit ends an attempt with TIMEOUT.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scheduler.backends.base import BackendEvent, EventKind
from scheduler.clock import VirtualClock
from scheduler.model.cluster import Node, NodeState
from scheduler.model.job import Job
from scheduler.model.plan import Allocation


@dataclass(slots=True)
class _Attempt:
    attempt: int
    started_at: float
    overhead_s: float
    nodes: tuple[str, ...]


class SimBackend:
    def __init__(
        self,
        clock: VirtualClock,
        nodes: Sequence[Node],
        durations: Mapping[str, float],
        checkpoint_interval_s: float = 1800.0,
        restart_overhead_s: float = 60.0,
    ) -> None:
        self._clock = clock
        self._nodes = {n.id: n for n in nodes}
        self._durations = durations
        self._interval = checkpoint_interval_s
        self._overhead = restart_overhead_s
        self._saved: dict[str, float] = {}  # job → seconds of work safely checkpointed
        self._attempts: dict[str, _Attempt] = {}
        self._heap: list[tuple[float, int, BackendEvent]] = []
        self._seq = 0

    # --- Backend protocol --------------------------------------------------------------------
    def nodes(self) -> Sequence[Node]:
        return list(self._nodes.values())

    def start(self, job: Job, allocation: Allocation) -> None:
        now = self._clock.now()
        overhead = self._overhead if job.restart_count > 0 else 0.0
        attempt = _Attempt(job.restart_count, now, overhead, allocation.node_ids)
        self._attempts[job.id] = attempt
        self._push(BackendEvent(EventKind.STARTED, now, job.id, job.restart_count))
        need = overhead + self.remaining_work(job.id)
        limit = job.spec.time_limit_s
        if limit is not None and limit < need:
            self._push(BackendEvent(EventKind.TIMED_OUT, now + limit, job.id, job.restart_count))
        else:
            self._push(BackendEvent(EventKind.EXITED, now + need, job.id, job.restart_count, exit_code=0))

    def adopt(self, job: Job, allocation: Allocation, remaining_s: float) -> None:
        """Take over a job already running elsewhere (a live cluster's state replayed forward, see
        scheduler/forecast): an attempt from now, without restart overhead, that needs
        `remaining_s` more seconds (inf: it never ends by itself)."""
        now = self._clock.now()
        self._attempts[job.id] = _Attempt(job.restart_count, now, 0.0, allocation.node_ids)
        total = self._durations[job.id]
        self._saved[job.id] = 0.0 if math.isinf(remaining_s) else max(0.0, total - remaining_s)
        if remaining_s != math.inf:
            self._push(
                BackendEvent(EventKind.EXITED, now + remaining_s, job.id, job.restart_count, exit_code=0)
            )

    def stop(self, job: Job, grace_s: float) -> None:
        attempt = self._attempts.get(job.id)
        if attempt is None:
            return
        self._push(BackendEvent(EventKind.STOPPED, self._clock.now() + grace_s, job.id, attempt.attempt))

    def poll(self) -> list[BackendEvent]:
        now = self._clock.now()
        out: list[BackendEvent] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, event = heapq.heappop(self._heap)
            if self._is_current(event):
                self._finish_attempt(event)
                out.append(event)
        return out

    # --- simulation controls ---------------------------------------------------------------
    def next_time(self) -> float:
        """When the next event is due (inf if none)."""
        while self._heap and not self._is_current(self._heap[0][2]):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else math.inf

    def remaining_work(self, job_id: str) -> float:
        return max(0.0, self._durations[job_id] - self._saved.get(job_id, 0.0))

    def fail_node(self, node_id: str, at: float, repair_s: float | None) -> None:
        """Schedule a node loss at `at` (and its return `repair_s` later, if given)."""
        self._push(BackendEvent(EventKind.NODE_LOST, at, node=node_id))
        if repair_s is not None:
            self._push(BackendEvent(EventKind.NODE_JOINED, at + repair_s, node=node_id))

    def jobs_on(self, node_id: str) -> list[str]:
        return [j for j, a in self._attempts.items() if node_id in a.nodes]

    # --- internals -----------------------------------------------------------------------------
    def _push(self, event: BackendEvent) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (event.time, self._seq, event))

    def _is_current(self, event: BackendEvent) -> bool:
        if event.kind in (EventKind.NODE_LOST, EventKind.NODE_JOINED, EventKind.STARTED):
            return True
        attempt = self._attempts.get(event.job_id)
        return attempt is not None and attempt.attempt == event.attempt

    def _finish_attempt(self, event: BackendEvent) -> None:
        if event.kind is EventKind.NODE_LOST:
            node = self._nodes[event.node]
            self._nodes[event.node] = node.model_copy(update={"state": NodeState.DOWN})
            for job_id in self.jobs_on(event.node):
                self._save_progress(job_id, event.time)
                del self._attempts[job_id]
            return
        if event.kind is EventKind.NODE_JOINED:
            node = self._nodes[event.node]
            self._nodes[event.node] = node.model_copy(update={"state": NodeState.READY})
            return
        if event.kind is EventKind.STARTED:
            return
        if event.kind is EventKind.EXITED:
            self._saved[event.job_id] = self._durations[event.job_id]
        else:  # STOPPED or TIMED_OUT: keep what was checkpointed
            self._save_progress(event.job_id, event.time)
        del self._attempts[event.job_id]

    def _save_progress(self, job_id: str, now: float) -> None:
        attempt = self._attempts[job_id]
        worked = max(0.0, now - attempt.started_at - attempt.overhead_s)
        checkpointed = math.floor(worked / self._interval) * self._interval if self._interval > 0 else 0.0
        saved = self._saved.get(job_id, 0.0) + checkpointed
        self._saved[job_id] = min(saved, self._durations[job_id])
