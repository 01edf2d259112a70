"""RayBackend: jobs as gangs of detached Ray actors in a placement group pinned to Corral's nodes.

An attempt of a job (its restart count) is one placement group `corral-<job>-<attempt>` with one
bundle of GPUs per allocated node, each bundle pinned to its node by the node's Corral label, and
one worker actor `corral-<job>-<attempt>-r<rank>` per bundle that runs the command as a subprocess.
Both are detached and named, so they outlive the controller and a restarted one finds them again
(`attempts()`, `adopt()`, `remove()`).

Isolation: a job runs in its own directory (`<work_root>/<job id>` unless its spec names one), as
an unprivileged `job_user` when the workers run as root, and its log stops growing at
`log_cap_bytes`. A command that cannot start (not found, not executable, a missing directory, an
unopenable log) ends the job with a shell's exit code (127/126) and the reason: EXITED, never a
retry. What cannot be placed or launched in time is START_FAILED, with the cause and the node it
blames.

Threads: the public methods only record intent and return; a small pool runs the blocking steps
(placement, actor creation, launch, teardown), one watcher thread `ray.wait`s on every rank's
`wait()` and one refresher thread polls the node table. Bookkeeping is under one lock; events are
queued for `poll()`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import ray
from ray.util.placement_group import get_placement_group, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from scheduler import faults
from scheduler.backends import job_log, proc_tree, rank_setup, ray_worker
from scheduler.backends.base import BackendEvent, EventKind, NodeAddress
from scheduler.backends.job_log import JobLog
from scheduler.backends.rank_setup import Launch
from scheduler.backends.ray_attempt import (
    ACTOR_NAME,
    PG_NAME,
    actor_name,
    pg_name,
    rank_env,
    rank_message,
    unplaced,
)
from scheduler.backends.ray_nodes import (
    FAST_HEALTH_CHECK,
    LABEL_GPU_TYPE,
    LABEL_NODE,
    LABEL_NVLINK,
    LABEL_RACK,
    LABEL_REGION,
    LABEL_ZONE,
    RAY_NODE_ID_LABEL,
    address_from_ray,
    node_from_ray,
)
from scheduler.backends.ray_state import free_gpus, gcs_health, one_line
from scheduler.backends.ray_worker import RankEnd, RankWorker
from scheduler.clock import Clock
from scheduler.model.cluster import Node
from scheduler.model.job import Job
from scheduler.model.plan import Allocation

__all__ = [  # the node labels and names are part of this backend's API
    "FAST_HEALTH_CHECK",
    "LABEL_GPU_TYPE",
    "LABEL_NODE",
    "LABEL_NVLINK",
    "LABEL_RACK",
    "LABEL_REGION",
    "LABEL_ZONE",
    "RAY_NODE_ID_LABEL",
    "RayBackend",
    "actor_name",
    "node_from_ray",
    "pg_name",
    "rank_env",
]

log = logging.getLogger(__name__)

_FAIL_GRACE_S = 3.0  # when one rank fails, the others get this long to exit before SIGKILL
_RPC_SLACK_S = 5.0  # on top of a grace period, for the actor calls themselves
_NODE_DEATH_WAIT_S = 5.0  # a rank's actor died: how long to wait for Ray to say its node died
_WAIT_SLICE_S = 0.1
_GCS_TIMEOUT_S = 2.0  # one read of the node resources by the refresher
_FRESH_TIMEOUT_S = 0.5  # one read of them by a scheduling cycle that places jobs, which waits for it
_FRESH_RETRY_S = 5.0  # after a cycle's read failed, cycles use the refresher's view this long
_HEALTH_TIMEOUT_S = 1.0

# Ship the worker class (and what it uses) by value: nodes need Ray, not Corral, installed.
for _module in (ray_worker, rank_setup, job_log, proc_tree):
    ray.cloudpickle.register_pickle_by_value(_module)  # type: ignore[no-untyped-call]
_RemoteRankWorker = ray.remote(RankWorker)


class _StartError(Exception):
    """A start that could not complete in time (START_FAILED): why, and the node it blames."""

    def __init__(self, message: str, node: str) -> None:
        super().__init__(message)
        self.message = message
        self.node = node


class _Phase(str, Enum):
    STARTING = "starting"
    RUNNING = "running"
    FINISHING = "finishing"  # ended by itself (or a rank failed): cleaning up before EXITED
    STOPPING = "stopping"  # stop() asked: cleaning up before STOPPED
    DONE = "done"


@dataclass(eq=False)
class _Handles:
    """What an attempt holds in Ray: its placement group and its rank actors."""

    pg: Any = None
    actors: list[Any] = field(default_factory=list)


@dataclass(eq=False)
class _Run:
    """One attempt of one job, as this backend knows it."""

    job: Job
    node_ids: tuple[str, ...]
    gpus: tuple[int, ...]
    held: _Handles = field(default_factory=_Handles)
    phase: _Phase = _Phase.STARTING
    waits: dict[Any, int] = field(default_factory=dict)  # ObjectRef of a rank's wait() → rank
    stop_grace: float | None = None  # set once stop() was asked
    stop_asked_at: float = 0.0  # monotonic time of that first stop()
    node_lost: bool = False  # NODE_LOST for this job was emitted

    @classmethod
    def of(cls, job: Job, allocation: Allocation) -> _Run:
        return cls(job=job, node_ids=allocation.node_ids, gpus=tuple(len(n.gpus) for n in allocation.nodes))

    @property
    def attempt(self) -> int:
        return self.job.restart_count

    @property
    def key(self) -> tuple[str, int]:
        return (self.job.id, self.attempt)


class RayBackend:
    def __init__(
        self,
        address: str,
        log_dir: Path,
        clock: Clock,
        *,
        namespace: str = "corral",
        start_timeout_s: float = 30.0,
        refresh_s: float = 0.5,
        max_workers: int = 16,
        work_root: Path | None = None,
        job_user: str | None = None,
        log_cap_bytes: int = 1 << 30,
    ) -> None:
        """`work_root` holds each job's own working directory (default: `log_dir.parent / "work"`);
        `job_user` is who jobs run as when the workers are root (see job_user.ensure_job_user());
        `log_cap_bytes` caps each job's log."""
        if log_cap_bytes < 1:
            raise ValueError(f"log_cap_bytes must be at least 1, got {log_cap_bytes}")
        log_dir = Path(log_dir).absolute()
        work_root = Path(work_root).absolute() if work_root is not None else log_dir.parent / "work"
        if work_root == log_dir or log_dir in work_root.parents:
            raise ValueError(
                f"work_root {work_root} must not be inside the log dir {log_dir}: jobs would see logs"
            )
        if ray.is_initialized():
            raise RuntimeError("ray is already initialized in this process: one RayBackend per process")
        # Ray's token authentication is left as the deployment configured it (RAY_AUTH_MODE and its
        # token); only `corral up`'s private loopback cluster turns it off, in its own environment.
        ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)
        # Ray sets up its serializers (importing pydantic.v1 lazily) on the first get; done first from
        # a pool thread while the API imports pydantic elsewhere, that import races and fails with
        # KeyError('pydantic.v1'). Do it once here, on this thread, before any other starts.
        importlib.import_module("pydantic.v1.fields")
        ray.get(ray.put(None))
        self.namespace = namespace
        self.address = address
        self._faults = faults.active()
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.work_root = work_root
        self.job_user = job_user
        self.log_cap_bytes = log_cap_bytes
        self._clock = clock
        self._start_timeout_s = start_timeout_s
        self._refresh_s = refresh_s
        self._lock = threading.RLock()
        self._events: list[BackendEvent] = []
        self._runs: dict[tuple[str, int], _Run] = {}
        self._exited: dict[tuple[str, int], _Handles] = {}  # ended attempts awaiting release()
        self.on_event: Callable[[], None] | None = None  # called after each event is queued
        self._nodes: dict[str, Node] = {}
        self._ray_ids: dict[str, str] = {}  # Ray's hex node id → Corral's node id, alive GPU nodes
        self._addresses: dict[str, NodeAddress] = {}  # Corral's node id → its raylet's IP and host
        self._free_gpus: dict[str, float] = {}
        self._fresh_retry_at = -math.inf  # cycles read Ray's free GPUs themselves from then on
        self._refresh_lock = threading.Lock()  # one refresh at a time, so node changes apply in order
        self._closing = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="corral-ray")
        # Forced stops (a stop re-issued by the controller's watchdog) never queue behind starts.
        self._rescue = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-ray-rescue")
        self._refresh_nodes(emit=False)
        self._refresh_free_gpus()
        self._threads = [
            threading.Thread(
                target=self._loop, args=(self._watch_once,), name="corral-ray-watch", daemon=True
            ),
            threading.Thread(
                target=self._loop, args=(self._nodes_once,), name="corral-ray-nodes", daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    # --- Backend protocol --------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        """The alive GPU nodes (dead ones are left out, not returned DOWN); a cached view."""
        with self._lock:
            return list(self._nodes.values())

    def start(self, job: Job, allocation: Allocation) -> None:
        run = _Run.of(job, allocation)
        with self._lock:
            self._runs[run.key] = run
        self._submit(self._guarded, self._start_run, run)

    def stop(self, job: Job, grace_s: float) -> None:
        with self._lock:
            run = self._runs.get((job.id, job.restart_count))
            if run is None:
                self._submit(self._stop_untracked, job.id, job.restart_count, grace_s)
                return
            if run.stop_grace is not None:  # already stopping: a shorter grace still applies
                if grace_s < run.stop_grace:
                    run.stop_grace = grace_s
                    for actor in run.held.actors:
                        actor.terminate.remote(grace_s)
                elif self._overdue(run) and not self._closing.is_set():
                    # Asked again long after its grace (the controller's watchdog): its start or stop
                    # task is stuck or still queued behind others. End it by its names now.
                    self._rescue.submit(_logged, self._force_stop, run)
                return
            run.stop_grace = grace_s
            run.stop_asked_at = time.monotonic()
            if run.phase is _Phase.RUNNING:
                run.phase = _Phase.STOPPING
                self._submit(self._guarded, self._stop_run, run)
            # STARTING: the start thread sees stop_grace; FINISHING: it ends with EXITED.

    def poll(self) -> list[BackendEvent]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def log_path(self, job_id: str) -> Path:
        return self.log_dir / f"{job_id}.log"

    def checkpoint_dir(self, job: Job) -> Path:
        """spec.checkpoint_dir, or by default <work_root>/checkpoints/<job id> (created at launch,
        mode 0700, owned by the job user): beside the jobs' work, away from the controller's state."""
        if job.spec.checkpoint_dir:
            return Path(job.spec.checkpoint_dir)
        return self.work_root / "checkpoints" / job.id

    def work_dir(self, job: Job) -> Path:
        """Where the job runs: spec.working_dir, or its own <work_root>/<job id> (created at launch,
        mode 0700, owned by the job user)."""
        if job.spec.working_dir:
            return Path(job.spec.working_dir)
        return self.work_root / job.id

    def available_gpus(self) -> dict[str, float]:
        """GPUs Ray has free per alive node (after every placement group, Corral's or not); a
        cached view, refreshed with the node table (it lags by seconds on a loaded host: see
        read_available_gpus)."""
        with self._lock:
            return dict(self._free_gpus)

    def read_available_gpus(self) -> dict[str, float]:
        """available_gpus(), read from the GCS now: a cycle that places jobs checks its plan
        against it (a job once went to GPUs another driver had taken a second before the job
        was submitted, while the cached view still had them free). While the GCS does not answer,
        the cached view, without asking again for a few seconds (a cycle must not wait on a dead
        GCS each time)."""
        if time.monotonic() >= self._fresh_retry_at:
            try:
                free = self._read_free_gpus(_FRESH_TIMEOUT_S)
            except Exception:
                self._fresh_retry_at = time.monotonic() + _FRESH_RETRY_S
            else:
                with self._lock:
                    self._free_gpus = free
                return dict(free)
        return self.available_gpus()

    def node_addresses(self) -> dict[str, NodeAddress]:
        """Where each node of nodes() runs (raylet IP and host name: in KubeRay, its pod's IP and
        name); a cached view, refreshed with the node table."""
        with self._lock:
            return dict(self._addresses)

    def health(self) -> str:
        """ "ok", or what is wrong in one line: one small request to Ray's GCS, with a short timeout."""
        if self._closing.is_set():
            return "the Ray backend is closed"
        return gcs_health(self.address, _HEALTH_TIMEOUT_S)

    # --- reconciliation ----------------------------------------------------------------------
    def attempt_pairs(self) -> set[tuple[str, int]]:
        """(job id, attempt) of every Corral placement group or worker actor alive in the namespace."""
        found: set[tuple[str, int]] = set()
        for name in ray.util.list_named_actors(all_namespaces=False):
            if m := ACTOR_NAME.match(name):
                found.add((m["job"], int(m["attempt"])))
        for info in ray.util.placement_group_table().values():
            if info.get("state") != "REMOVED" and (m := PG_NAME.match(info.get("name") or "")):
                found.add((m["job"], int(m["attempt"])))
        return found

    def attempts(self) -> dict[str, int]:
        """Job id → its latest attempt found alive (see attempt_pairs() for older leftovers)."""
        latest: dict[str, int] = {}
        for job_id, attempt in self.attempt_pairs():
            latest[job_id] = max(attempt, latest.get(job_id, attempt))
        return latest

    def adopt(self, job: Job, allocation: Allocation) -> None:
        """Watch an attempt a previous controller started: STARTED now if it runs, EXITED when it
        ends (at once if it already did), START_INTERRUPTED if it was half-started (its controller
        stopped mid-start) or half-gone (ranks vanished while nobody watched)."""
        run = _Run.of(job, allocation)
        with self._lock:
            self._runs[run.key] = run
        self._submit(self._guarded, self._adopt_run, run)

    def remove(self, job_id: str, attempt: int) -> None:
        """Orphan cleanup (blocking, bounded): SIGKILL its processes, kill its actors, remove its PG."""
        with self._lock:
            run = self._runs.pop((job_id, attempt), None)
            if run is not None:
                run.phase = _Phase.DONE
        self._teardown(self._find_named(job_id, attempt), 0.0)

    def close(self) -> None:
        """Stop watching and disconnect; detached jobs keep running for the next controller."""
        self._closing.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._rescue.shutdown(wait=True, cancel_futures=True)
        ray.shutdown()

    # --- start -------------------------------------------------------------------------------
    def _start_run(self, run: _Run) -> None:
        if self._aborted(run):  # stopped while this start waited in the queue: start nothing
            if not self._closing.is_set():
                self._end(run, EventKind.STOPPED)
            return
        deadline = time.monotonic() + self._start_timeout_s
        ok = False
        why = _StartError("the start did not complete", "")
        try:
            # `ok` only from the whole start: a launch that raises after the group was placed must
            # still tear the attempt down and end it (else it stays STARTING, and nobody ends it).
            placed = self._place(run, deadline)
            if placed:
                faults.crash_point("after_placement_group")  # chaos tests only: PG up, no rank yet
            ok = placed and self._launch(run, deadline)
        except _StartError as exc:
            why = exc
        except Exception as exc:
            log.warning("start of %s attempt %d failed", run.job.id, run.attempt, exc_info=True)
            why = _StartError(one_line(exc), "")
        if ok or self._closing.is_set():  # closing: leave it for the next controller to adopt
            return
        self._teardown(run.held, run.stop_grace or 0.0)
        if run.stop_grace is not None:
            self._end(run, EventKind.STOPPED)
            return
        log.warning("start of %s attempt %d failed: %s", run.job.id, run.attempt, why.message)
        self._end(run, EventKind.START_FAILED, message=why.message, node=why.node)

    def _place(self, run: _Run, deadline: float) -> bool:
        """Reserve one bundle per node, each pinned to its node; False if the start was aborted,
        _StartError if not ready in time."""
        leftover = self._find_named(run.job.id, run.attempt)
        if leftover.pg is not None or leftover.actors:  # a crashed controller's try at this attempt
            self._teardown(leftover, 0.0)
        run.held.pg = placement_group(
            [{"GPU": g} if g > 0 else {"CPU": 0.01} for g in run.gpus],
            strategy="STRICT_SPREAD",
            name=pg_name(run.job.id, run.attempt),
            lifetime="detached",
            bundle_label_selector=[self._selector(n) for n in run.node_ids],
        )
        while not run.held.pg.wait(timeout_seconds=min(0.5, max(0.0, deadline - time.monotonic()))):
            if self._aborted(run):
                return False
            if time.monotonic() >= deadline:
                raise self._unplaced(run)
        return not self._aborted(run)

    def _unplaced(self, run: _Run) -> _StartError:
        """Why the attempt's placement group is not ready, by Ray's current count of free GPUs."""
        try:
            free = self._read_free_gpus(_GCS_TIMEOUT_S)
        except Exception:
            free = self.available_gpus()
        with self._lock:
            nodes = dict(self._nodes)
        bundles = list(zip(run.node_ids, run.gpus, strict=True))
        name = pg_name(run.job.id, run.attempt)
        message, node = unplaced(name, self._start_timeout_s, bundles, nodes, free)
        return _StartError(message, node)

    def _launch(self, run: _Run, deadline: float) -> bool:
        job = run.job
        for rank, gpus in enumerate(run.gpus):
            strategy = PlacementGroupSchedulingStrategy(run.held.pg, placement_group_bundle_index=rank)
            run.held.actors.append(
                _RemoteRankWorker.options(
                    name=actor_name(job.id, run.attempt, rank),
                    lifetime="detached",
                    num_cpus=0,
                    num_gpus=gpus,
                    max_concurrency=8,  # wait() blocks one thread; terminate() needs another
                    max_restarts=0,
                    scheduling_strategy=strategy,
                ).remote(job.id, run.attempt, rank)
            )
        if (dying := self._faults.get("rank_dies_on_node")) in run.node_ids:  # fault injection (tests only)
            ray.kill(run.held.actors[run.node_ids.index(dying)], no_restart=True)
        # Every rank answers, not only rank 0: a dead rank is then blamed, not a slow rank 0.
        master = self._gather(run, [actor.address.remote() for actor in run.held.actors], deadline)[0]
        if self._aborted(run):
            return False
        self._write_header(run)
        launches = [
            actor.launch.remote(self._launch_spec(run, rank, master))
            for rank, actor in enumerate(run.held.actors)
        ]
        results: list[RankEnd | None] = self._gather(run, launches, deadline)
        failed = next(((rank, end) for rank, end in enumerate(results) if end is not None), None)
        with self._lock:
            if run.stop_grace is not None:
                return False
            if failed is None:
                self._watch(run)
                self._emit(EventKind.STARTED, run)
                return True
            run.phase = _Phase.FINISHING  # a rank could not start: the job fails, with the reason
        rank, (code, message) = failed
        self._finish(run, code, self._rank_message(run, rank, message), run.node_ids[rank])
        return True

    def _launch_spec(self, run: _Run, rank: int, master: tuple[str, int]) -> Launch:
        job = run.job
        checkpoint = str(self.checkpoint_dir(job))
        return Launch(
            argv=tuple(job.spec.command),
            env=rank_env(job, rank, run.node_ids[rank], run.gpus[rank], master, checkpoint),
            cwd=str(self.work_dir(job)),
            log_path=str(self.log_path(job.id)),
            node=run.node_ids[rank],
            prefix=f"[rank {rank}] " if job.spec.nodes > 1 else "",
            log_cap=self.log_cap_bytes,
            own_cwd=not job.spec.working_dir,
            checkpoint_dir=checkpoint,
            own_checkpoint=not job.spec.checkpoint_dir,
            user=self.job_user,
        )

    def _gather(self, run: _Run, refs: list[Any], deadline: float) -> list[Any]:
        """The results of one call per rank (rank i = refs[i]); a _StartError blaming the node of
        the first rank whose actor failed or did not answer in time."""
        _, pending = ray.wait(refs, num_returns=len(refs), timeout=_left(deadline))
        if len(pending) > 1:
            # Which of several late ranks to blame: Ray can report a dead actor a moment after
            # the deadline on a loaded machine, and the dead rank's node is the one to count
            # towards a cordon, not a healthy rank that is merely slow.
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=_RPC_SLACK_S)
        results = []
        # A rank whose actor died names the cause better than one that is only slow (on a loaded
        # machine a healthy rank can miss the deadline while another rank's node is the problem).
        for rank, ref in enumerate(refs):
            if ref in pending:
                continue
            node = run.node_ids[rank]
            try:
                results.append(ray.get(ref, timeout=_RPC_SLACK_S))
            except Exception as exc:
                raise _StartError(
                    f"worker actor of rank {rank} on node {node}: {one_line(exc)}", node
                ) from exc
        for rank, ref in enumerate(refs):
            if ref in pending:
                node = run.node_ids[rank]
                raise _StartError(
                    f"worker actor of rank {rank} on node {node} did not answer within "
                    f"{self._start_timeout_s:g} s",
                    node,
                )
        return results

    def _write_header(self, run: _Run) -> None:
        when = datetime.fromtimestamp(self._clock.now(), tz=timezone.utc).isoformat(timespec="seconds")
        line = f"=== corral: attempt {run.attempt} on {','.join(run.node_ids)} at {when} ==="
        try:
            header = JobLog.open(str(self.log_path(run.job.id)), self.log_cap_bytes)
        except OSError as exc:  # the workers find it too and end the job with the reason
            log.warning("cannot write the header of job %s's log: %s", run.job.id, exc)
            return
        try:
            header.write_line(line.encode())
        finally:
            header.close()

    def _selector(self, node_id: str) -> dict[str, str]:
        if self._faults.get("unplaceable_node") == node_id:  # fault injection (tests only)
            return {LABEL_NODE: "corral-fault-unplaceable"}
        with self._lock:
            node = self._nodes.get(node_id)
        if node is not None and node.labels.get(LABEL_NODE) != node_id:
            return {RAY_NODE_ID_LABEL: node_id}  # a node without a Corral label goes by its Ray id
        return {LABEL_NODE: node_id}

    def _aborted(self, run: _Run) -> bool:
        return run.stop_grace is not None or self._closing.is_set()

    # --- adopt, stop, end --------------------------------------------------------------------
    def _adopt_run(self, run: _Run) -> None:
        run.held = self._find_named(run.job.id, run.attempt)
        launched: list[bool] = []
        ended = False
        ranks = len(run.gpus)
        pg = "found" if run.held.pg else "missing"
        why = f"placement group {pg}, {len(run.held.actors)} of {ranks} actors"
        if run.held.pg is not None and len(run.held.actors) == ranks:
            try:
                launched = ray.get([a.launched.remote() for a in run.held.actors], timeout=10)
                codes = ray.get([a.exit_code.remote() for a in run.held.actors], timeout=10)
                ended = any(code is not None for code in codes)
                why = f"{sum(launched)} of {ranks} ranks launched"
            except Exception as exc:  # an actor on a dead node: not adoptable
                why = one_line(exc)
        if launched and all(launched):
            with self._lock:
                if run.stop_grace is None:
                    self._watch(run)  # an attempt that ended unwatched reports EXITED at once
                    if not ended:
                        self._emit(EventKind.STARTED, run)
                    return
            self._teardown(run.held, run.stop_grace)
            self._end(run, EventKind.STOPPED)
            return
        log.warning("attempt %s of job %s cannot be adopted (%s): requeued", run.attempt, run.job.id, why)
        self._teardown(run.held, 0.0)  # half-started or half-gone: requeue it
        if run.stop_grace is not None:
            self._end(run, EventKind.STOPPED)
        else:
            self._end(
                run,
                EventKind.START_INTERRUPTED,
                message=f"attempt {run.attempt} could not be adopted: {why}",
            )

    def _watch(self, run: _Run) -> None:
        run.phase = _Phase.RUNNING
        run.waits = {actor.wait.remote(): rank for rank, actor in enumerate(run.held.actors)}

    def _stop_run(self, run: _Run) -> None:
        self._teardown(run.held, run.stop_grace or 0.0)
        self._end(run, EventKind.STOPPED)

    def _stop_untracked(self, job_id: str, attempt: int, grace_s: float) -> None:
        # Not started by this process (or long gone): stop whatever still runs under its names.
        self._teardown(self._find_named(job_id, attempt), grace_s)
        with self._lock:
            self._events.append(BackendEvent(EventKind.STOPPED, self._clock.now(), job_id, attempt))
        self._notify()

    def _finish(self, run: _Run, code: int, message: str = "", node: str = "") -> None:
        """The job ended by itself (or its first rank failed): stop the other ranks, then report
        EXITED. The actors (which hold the exit codes) and the placement group stay until the
        controller has recorded the end and calls release(): if it dies before, the next one adopts
        the attempt and reads the exit code again, instead of finding nothing and re-running it."""
        self._stop_ranks(run.held, _FAIL_GRACE_S)
        with self._lock:
            self._exited[run.key] = run.held
        self._end(run, EventKind.EXITED, exit_code=code, message=message, node=node)

    @staticmethod
    def _rank_message(run: _Run, rank: int, message: str) -> str:
        return rank_message(run.node_ids, rank, message)

    def release(self, job_id: str, attempt: int) -> None:
        """Free what an EXITED attempt still holds (its actors and placement group); non-blocking."""
        with self._lock:
            held = self._exited.pop((job_id, attempt), None)
        if held is not None:
            self._submit(self._teardown, held, 0.0)
        else:
            self._submit(self._release_untracked, job_id, attempt)

    def _release_untracked(self, job_id: str, attempt: int) -> None:
        self._teardown(self._find_named(job_id, attempt), 0.0)

    def _overdue(self, run: _Run) -> bool:
        """Whether the run's stop should have completed long ago (its grace, the RPCs and a start's
        own timeout, all past)."""
        limit = (run.stop_grace or 0.0) + _RPC_SLACK_S + self._start_timeout_s
        return time.monotonic() - run.stop_asked_at > limit

    def _force_stop(self, run: _Run) -> None:
        """End an attempt whose stop did not complete: remove what runs under its names (SIGKILL
        after no grace), then STOPPED. A start still running for it finds it ended and stops."""
        with self._lock:
            if run.phase is _Phase.DONE or self._runs.get(run.key) is not run:
                return
        log.warning("stop of job %s attempt %d did not complete: forcing it", run.job.id, run.attempt)
        self._teardown(self._find_named(run.job.id, run.attempt), 0.0)
        self._end(run, EventKind.STOPPED)

    def _end(
        self, run: _Run, kind: EventKind, exit_code: int | None = None, message: str = "", node: str = ""
    ) -> None:
        with self._lock:
            if run.phase is _Phase.DONE:  # ended already (a forced stop): one end event per attempt
                return
            run.phase = _Phase.DONE
            if self._runs.get(run.key) is run:
                del self._runs[run.key]
            self._emit(kind, run, exit_code=exit_code, message=message, node=node)

    def _teardown(self, handles: _Handles, grace_s: float) -> None:
        """Stop every rank (SIGTERM, grace, SIGKILL), then kill the actors and remove the PG."""
        self._stop_ranks(handles, grace_s)
        for actor in handles.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        if handles.pg is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(handles.pg)

    @staticmethod
    def _stop_ranks(handles: _Handles, grace_s: float) -> None:
        """SIGTERM every rank's process group, SIGKILL it after the grace; the actors stay."""
        refs = [actor.terminate.remote(grace_s) for actor in handles.actors]
        if refs and faults.armed("mid_preemption"):  # chaos tests only
            ray.wait(refs, num_returns=len(refs), timeout=min(0.5, grace_s))  # the SIGTERMs land
            faults.crash_point("mid_preemption")
        if refs:
            with contextlib.suppress(Exception):
                ray.wait(refs, num_returns=len(refs), timeout=grace_s + _RPC_SLACK_S)

    def _find_named(self, job_id: str, attempt: int) -> _Handles:
        """The PG and actors of an attempt, looked up by their names (missing ones left out)."""
        found = _Handles()
        with contextlib.suppress(ValueError):
            found.pg = get_placement_group(pg_name(job_id, attempt))
        ranks = sorted(
            int(m["rank"])
            for name in ray.util.list_named_actors(all_namespaces=False)
            if (m := ACTOR_NAME.match(name)) and m["job"] == job_id and int(m["attempt"]) == attempt
        )
        for rank in ranks:
            with contextlib.suppress(ValueError):
                found.actors.append(ray.get_actor(actor_name(job_id, attempt, rank)))
        return found

    # --- watching ----------------------------------------------------------------------------
    def _loop(self, step: Callable[[], None]) -> None:
        while not self._closing.is_set():
            try:
                step()
            except Exception:  # a Ray hiccup must never kill the watcher
                log.warning("ray backend watcher step failed", exc_info=True)
                self._closing.wait(0.5)

    def _watch_once(self) -> None:
        with self._lock:
            refs = [ref for run in self._runs.values() if run.phase is _Phase.RUNNING for ref in run.waits]
        if not refs:
            self._closing.wait(_WAIT_SLICE_S)
            return
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=_WAIT_SLICE_S, fetch_local=True)
        for ref in ready:
            self._rank_ended(ref)

    def _rank_ended(self, ref: Any) -> None:
        run, rank = self._take_wait(ref)
        if run is None:
            return
        try:
            end = ray.get(ref, timeout=_RPC_SLACK_S)
        except Exception:  # its actor died: node loss, or killed from outside
            self._submit(self._rank_lost, run, rank)
            return
        code, message = (end, "") if isinstance(end, int) else end  # an int: a worker of before 0.2
        with self._lock:
            if run.phase is not _Phase.RUNNING or (code == 0 and run.waits):
                return
            run.phase = _Phase.FINISHING  # all ranks done, or the first failure: end the gang
        node = run.node_ids[rank] if code != 0 else ""
        self._submit(self._finish, run, code, self._rank_message(run, rank, message), node)

    def _take_wait(self, ref: Any) -> tuple[_Run | None, int]:
        with self._lock:
            for run in self._runs.values():
                if ref in run.waits:
                    return run, run.waits.pop(ref)
        return None, -1

    def _rank_lost(self, run: _Run, rank: int) -> None:
        node = run.node_ids[rank]
        deadline = time.monotonic() + _NODE_DEATH_WAIT_S
        while time.monotonic() < deadline and not self._closing.is_set():
            self._refresh_nodes(emit=True)
            with self._lock:
                if node not in self._nodes:
                    self._node_lost(run, node)
                    return
            self._closing.wait(0.25)
        with self._lock:
            if run.phase is not _Phase.RUNNING:
                return
            run.phase = _Phase.FINISHING
        # The rank vanished while its node lives on.
        self._finish(run, 128 + signal.SIGKILL, f"the worker actor of rank {rank} on node {node} died", node)

    def _nodes_once(self) -> None:
        self._refresh_nodes(emit=True)
        self._refresh_free_gpus()
        self._closing.wait(self._refresh_s)

    def _refresh_free_gpus(self) -> None:
        try:
            free = self._read_free_gpus(_GCS_TIMEOUT_S)
        except Exception:  # keep the last view; the node table is what decides
            log.warning("cannot read Ray's available resources", exc_info=True)
            return
        with self._lock:
            self._free_gpus = free

    def _read_free_gpus(self, timeout_s: float) -> dict[str, float]:
        with self._lock:
            ray_ids = dict(self._ray_ids)
        return free_gpus(ray_ids, timeout_s)

    def _refresh_nodes(self, emit: bool) -> None:
        with self._refresh_lock:
            fresh: dict[str, Node] = {}
            ray_ids: dict[str, str] = {}
            addresses: dict[str, NodeAddress] = {}
            for info in ray.nodes():  # type: ignore[no-untyped-call]
                if (node := node_from_ray(info)) is not None:
                    fresh[node.id] = node
                    ray_ids[str(info["NodeID"])] = node.id
                    addresses[node.id] = address_from_ray(info)
            with self._lock:
                self._ray_ids = ray_ids
                self._addresses = addresses
            self._apply_nodes(fresh, emit)

    def _apply_nodes(self, fresh: dict[str, Node], emit: bool) -> None:
        with self._lock:
            lost = [n for n in self._nodes if n not in fresh]
            joined = [n for n in fresh if n not in self._nodes]
            self._nodes = fresh
            if not emit:
                return
            now = self._clock.now()
            for node in lost:
                self._events.append(BackendEvent(EventKind.NODE_LOST, now, node=node))
                for run in list(self._runs.values()):
                    if node in run.node_ids:
                        self._node_lost(run, node)
            for node in joined:
                self._events.append(BackendEvent(EventKind.NODE_JOINED, now, node=node))

    def _node_lost(self, run: _Run, node: str) -> None:
        """Tell the controller once that a job lost a node; it answers with stop(job, 0)."""
        if run.node_lost or run.phase not in (_Phase.STARTING, _Phase.RUNNING):
            return
        run.node_lost = True
        self._emit(EventKind.NODE_LOST, run, node=node)

    # --- plumbing ----------------------------------------------------------------------------
    def _emit(
        self, kind: EventKind, run: _Run, *, exit_code: int | None = None, node: str = "", message: str = ""
    ) -> None:
        with self._lock:
            self._events.append(
                BackendEvent(
                    kind,
                    self._clock.now(),
                    run.job.id,
                    run.attempt,
                    exit_code=exit_code,
                    node=node,
                    message=message,
                )
            )
        self._notify()

    def _notify(self) -> None:
        if self.on_event is not None:
            self.on_event()  # the controller's wake(): it takes the event now, not at its next poll

    def _guarded(self, task: Callable[[_Run], None], run: _Run) -> None:
        """Run a start, adoption or stop of `run`; if it fails unexpectedly (a Ray call raising
        where none was expected), end the attempt anyway — STOPPED if a stop was asked, else
        START_FAILED (retried with backoff) — after removing what runs under its names, so the
        controller never waits for an event that would never come (a stop re-issued for ever)."""
        try:
            task(run)
        except Exception as exc:
            log.exception(
                "ray backend: %s of job %s attempt %d failed", task.__name__, run.job.id, run.attempt
            )
            with self._lock:
                lost = self._runs.get(run.key) is run and run.phase in (_Phase.STARTING, _Phase.STOPPING)
            if not lost:
                return
            with contextlib.suppress(Exception):
                self._teardown(self._find_named(run.job.id, run.attempt), 0.0)
            why = f"the backend lost track of attempt {run.attempt}: {one_line(exc)}"
            if run.stop_grace is not None:
                self._end(run, EventKind.STOPPED, message=why)
            else:
                self._end(run, EventKind.START_FAILED, message=why)

    def _submit(self, fn: Callable[..., None], *args: Any) -> None:
        if self._closing.is_set():
            return
        self._pool.submit(_logged, fn, *args)


def _logged(fn: Callable[..., None], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("ray backend task %s failed", getattr(fn, "__name__", fn))


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())
