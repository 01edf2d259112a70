"""The controller against what wedges schedulers: failed starts, bad nodes, Ray and Corral
disagreeing on free GPUs, restarts that forget fair share, a lost lock, an unreachable store.

Real SQLite store, the real Controller, a scripted backend that delivers exactly the events wanted.
"""

from __future__ import annotations

import pytest

from scheduler.backends.base import BackendEvent, EventKind
from scheduler.clock import VirtualClock
from scheduler.config.live import LiveConfig, parse_live_config
from scheduler.control.controller import DRIFT_GRACE_S, Controller, LockLost
from scheduler.control.transitions import MAX_START_RETRIES, START_BACKOFF_S
from scheduler.model.job import JobSpec, JobState
from scheduler.store import controller_state
from scheduler.store.store import Store
from tests.control.scripted import ScriptedBackend

CLUSTER = """
regions:
  - name: cn-north
    racks:
      - {name: r1, nodes: 2, gpu_type: H100, gpus_per_node: 8, cpus: 2, memory_gb: 16}
queues:
  - {name: vision, cohort: c, quota: {H100: 8}}
  - {name: nlp, cohort: c, quota: {H100: 8}}
policy:
  default_min_runtime_s: 0
"""
CONFIG: LiveConfig = parse_live_config(CLUSTER)
N0, N1 = (n.id for n in CONFIG.cluster.nodes)


class DriftingBackend(ScriptedBackend):
    """A scripted backend that also says what Ray has free per node (as RayBackend does)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.ray_free: dict[str, float] = {}
        self.cached_free: dict[str, float] | None = None  # a stale cached view, while not None
        self.fresh_reads = 0
        self.health_answer = "ok"

    def available_gpus(self) -> dict[str, float]:
        return dict(self.ray_free if self.cached_free is None else self.cached_free)

    def read_available_gpus(self) -> dict[str, float]:
        self.fresh_reads += 1
        self.cached_free = None  # a read refreshes the cached view
        return dict(self.ray_free)

    def health(self) -> str:
        return self.health_answer


def _controller(store: Store, backend: ScriptedBackend, clock: VirtualClock, **kw: object) -> Controller:
    c = Controller(store, backend, CONFIG, clock, min_decide_interval_s=0.0, **kw)  # type: ignore[arg-type]
    store.sync_queues(list(c.queues.values()))
    c.recover()
    return c


def _submit(store: Store, clock: VirtualClock, queue: str = "vision", **spec: object) -> str:
    job = JobSpec(command=["true"], queue=queue, **spec)  # type: ignore[arg-type]
    rec, _ = store.submit(job, queue, clock.now())
    return rec.id


def _fail_start(backend: ScriptedBackend, job: str, attempt: int, t: float, node: str = "") -> None:
    backend.events.append(
        BackendEvent(EventKind.START_FAILED, t, job, attempt, node=node, message="placement timed out")
    )


def test_a_failed_start_retries_with_backoff_then_fails_the_job(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = _controller(store, backend, clock)
    job = _submit(store, clock, gpus_per_node=1)
    c.step()
    delays = []
    for attempt in range(MAX_START_RETRIES):
        assert backend.started[-1] == (job, attempt)
        _fail_start(backend, job, attempt, clock.now())
        c.step()
        rec = store.get(job)
        assert rec is not None and rec.state is JobState.PENDING and rec.retry_at is not None
        assert rec.pending_reason is not None and rec.pending_reason.startswith(
            "StartFailed: placement timed out"
        )
        delays.append(rec.retry_at - clock.now())
        clock.advance_to(rec.retry_at - 0.5)
        c.step()  # still backing off: not placed again
        assert store.get(job).state is JobState.PENDING  # type: ignore[union-attr]
        assert store.get(job).pending_reason == rec.pending_reason  # type: ignore[union-attr]
        clock.advance_to(rec.retry_at)
        c.step()
        assert store.get(job).state is JobState.STARTING  # type: ignore[union-attr]
    assert delays == [START_BACKOFF_S * 2**i for i in range(MAX_START_RETRIES)]
    _fail_start(backend, job, MAX_START_RETRIES, clock.now())
    c.step()
    rec = store.get(job)
    assert rec is not None and rec.state is JobState.FAILED and store.held_gpus() == {}
    last = store.events(job)[-1]
    assert (
        last.kind == "FAILED" and "failed 4 times" in last.message and "placement timed out" in last.message
    )
    assert len(backend.started) == MAX_START_RETRIES + 1


def test_starts_interrupted_by_failovers_requeue_at_once_and_never_fail_the_job(store: Store) -> None:
    """Each failover that lands mid-start leaves an attempt its successor cannot adopt. That is no
    fault of the job: more of them than MAX_START_RETRIES must neither fail it nor back it off."""
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = _controller(store, backend, clock)
    job = _submit(store, clock, gpus_per_node=1)
    c.step()
    for attempt in range(MAX_START_RETRIES + 2):
        assert backend.started[-1] == (job, attempt)
        message = f"attempt {attempt} could not be adopted: 0 of 1 ranks launched"
        interrupted = BackendEvent(EventKind.START_INTERRUPTED, clock.now(), job, attempt, message=message)
        backend.events.append(interrupted)
        c.step()  # requeued, and placed again in the same step: no backoff
        rec = store.get(job)
        assert rec is not None and rec.state is JobState.STARTING, rec
        assert rec.start_failures == 0 and rec.retry_at is None
        requeued = [e for e in store.events(job) if e.kind == "REQUEUED"][-1]
        assert requeued.message == f"{message}: requeued (not a failed start)"
    backend.emit(EventKind.STARTED, job, MAX_START_RETRIES + 2, clock.now())
    c.step()
    assert store.get(job).state is JobState.RUNNING  # type: ignore[union-attr]


def test_a_successful_start_resets_the_failure_count(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = _controller(store, backend, clock)
    job = _submit(store, clock, gpus_per_node=1)
    c.step()
    _fail_start(backend, job, 0, clock.now())
    c.step()
    clock.advance_to(clock.now() + START_BACKOFF_S)
    c.step()
    backend.emit(EventKind.STARTED, job, 1, clock.now())
    c.step()
    rec = store.get(job)
    assert rec is not None and rec.state is JobState.RUNNING
    assert rec.start_failures == 0 and rec.retry_at is None


def test_a_command_that_cannot_run_fails_at_once_with_its_reason(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = _controller(store, backend, clock)
    job = _submit(store, clock, gpus_per_node=1)
    c.step()
    backend.emit(EventKind.STARTED, job, 0, clock.now())
    backend.events.append(
        BackendEvent(EventKind.EXITED, clock.now(), job, 0, 127, message="command not found: /no/such")
    )
    c.step()
    rec = store.get(job)
    assert rec is not None and rec.state is JobState.FAILED and rec.job.exit_code == 127
    assert store.events(job)[-1].message == "exit code 127: command not found: /no/such"
    assert backend.started == [(job, 0)]  # never requeued


def test_a_node_that_fails_three_starts_is_cordoned_until_uncordoned(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = _controller(store, backend, clock)
    jobs = [_submit(store, clock, gpus_per_node=8) for _ in range(2)]
    c.step()
    on = {}
    for job in jobs:
        rec = store.get(job)
        assert rec is not None and rec.allocation is not None
        on[rec.allocation.node_ids[0]] = job
    bad = on[N0]
    for attempt in range(3):
        _fail_start(backend, bad, attempt, clock.now(), node=N0)
        c.step()
        if attempt == 2:  # the view the cordoning step publishes already says why
            status = {s.node.id: s for s in c.view().nodes}[N0]
            assert status.node.state.value == "draining"
            assert "3 starts in a row failed" in status.cordon_reason
        clock.advance_to(clock.now() + 60)
        c.step()
    nodes = {s.node.id: s.node.state.value for s in c.view().nodes}
    assert nodes[N0] == "draining" and nodes[N1] == "ready"
    assert N0 in controller_state.cordons(store)
    assert "NODE_CORDONED" in [e.kind for e in store.events(bad)]
    assert [a.nodes for a in store.audit() if a.decision == "cordon"] == [(N0,)]
    # it waits for a node instead of being placed on the cordoned one again and again
    assert store.get(bad).state is JobState.PENDING  # type: ignore[union-attr]
    restarted = _controller(store, backend, clock)  # the cordon is in the store
    clock.advance_to(clock.now() + 10)
    restarted.step()
    assert {s.node.id: s.node.state.value for s in restarted.view().nodes}[N0] == "draining"
    assert controller_state.uncordon(store, N0)
    clock.advance_to(clock.now() + 10)
    restarted.step()
    assert {s.node.id: s.node.state.value for s in restarted.view().nodes}[N0] == "ready"
    assert store.get(bad).state is JobState.STARTING  # type: ignore[union-attr]


def test_free_gpus_are_the_minimum_of_corral_and_ray_and_lasting_drift_is_exported(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), DriftingBackend(list(CONFIG.cluster.nodes))
    backend.ray_free = {N0: 1.0, N1: 8.0}  # 7 GPUs of N0 are held by something outside Corral
    c = _controller(store, backend, clock)
    first, second = _submit(store, clock, gpus_per_node=8), _submit(store, clock, gpus_per_node=8)
    c.step()
    placed = {j: store.get(j).allocation for j in (first, second)}  # type: ignore[union-attr]
    assert placed[first] is not None and placed[first].node_ids == (N1,)
    assert placed[second] is None  # never placed on N0, where Ray would not start it
    assert {s.node.id: s.drift_gpus for s in c.view().nodes}[N0] == 0  # too young to call drift
    clock.advance_to(1000 + DRIFT_GRACE_S)
    c.step()
    assert {s.node.id: s.drift_gpus for s in c.view().nodes}[N0] == 7
    assert f'corral_gpu_accounting_drift{{node="{N0}"}} 7.0' in _scrape(c)
    assert c.dry_run(JobSpec(command=["true"], queue="nlp", gpus_per_node=2), "nlp").allocation is None
    backend.ray_free = {N0: 8.0, N1: 0.0}  # the outside holder let go
    clock.advance_to(clock.now() + c.full_cycle_s)  # lasting drift is looked at again every full cycle
    c.step()
    rec = store.get(second)
    assert rec is not None and rec.allocation is not None and rec.allocation.node_ids == (N0,)
    assert all(s.drift_gpus == 0 for s in c.view().nodes)


def test_a_placement_is_checked_against_rays_view_read_now_not_a_stale_cached_one(store: Store) -> None:
    """RayBackend's cached view of free GPUs lags by seconds on a loaded host: in CI a job was
    placed on GPUs another Ray driver had taken a second before it was submitted."""
    clock, backend = VirtualClock(1000.0), DriftingBackend(list(CONFIG.cluster.nodes))
    backend.ray_free = {N0: 0.0, N1: 8.0}  # N0 is held outside Corral, as Ray says now
    backend.cached_free = {N0: 8.0, N1: 8.0}  # from before that
    c = _controller(store, backend, clock)
    first, second = _submit(store, clock, gpus_per_node=8), _submit(store, clock, gpus_per_node=8)
    c.step()
    placed = {j: store.get(j).allocation for j in (first, second)}  # type: ignore[union-attr]
    assert placed[first] is not None and placed[first].node_ids == (N1,)
    assert placed[second] is None
    assert backend.fresh_reads == 1
    third = _submit(store, clock, queue="nlp", gpus_per_node=8)
    clock.advance_to(clock.now() + 1)
    c.step()  # no GPU free: nothing is placed, so Ray is not asked
    assert store.get(third).allocation is None  # type: ignore[union-attr]
    assert backend.fresh_reads == 1


def _scrape(c: Controller) -> str:
    from prometheus_client import generate_latest

    c.metrics.attach(c, leader=lambda: True)
    return generate_latest(c.metrics.registry).decode()


@pytest.mark.parametrize("keep_usage", [True, False])
def test_fair_share_usage_survives_a_restart_and_keeps_the_order(store: Store, keep_usage: bool) -> None:
    """vision used 16 GPUs for 10 hours; after a restart, nlp's job goes first although vision's
    was submitted first. Without the stored usage (the control case) vision's would go first."""
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = _controller(store, backend, clock)
    heavy = _submit(store, clock, queue="vision", nodes=2, gpus_per_node=8)
    c.step()
    backend.emit(EventKind.STARTED, heavy, 0, clock.now())
    clock.advance_to(1000 + 36_000)
    backend.emit(EventKind.EXITED, heavy, 0, clock.now(), code=0)
    c.step()
    shares = [q.fair_share for q in c.view().queues]
    assert shares[0] == pytest.approx(1.0)
    if not keep_usage:
        with store.engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM queue_usage")
    clock.advance_to(clock.now() + 60)
    restarted = _controller(store, ScriptedBackend(list(CONFIG.cluster.nodes)), clock)
    first, second = (_submit(store, clock, queue=q, nodes=2, gpus_per_node=8) for q in ("vision", "nlp"))
    restarted.step()
    placed = [j for j in (first, second) if store.get(j).state is JobState.STARTING]  # type: ignore[union-attr]
    if keep_usage:
        assert [q.fair_share for q in restarted.view().queues] == pytest.approx(shares, abs=1e-3)
        assert placed == [second]
    else:
        assert placed == [first]


def test_health_fails_when_the_store_or_ray_does(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), DriftingBackend(list(CONFIG.cluster.nodes))
    c = _controller(store, backend, clock)
    c.last_step_at = clock.now()
    c._thread = type("Alive", (), {"is_alive": lambda self: True})()  # type: ignore[assignment]
    assert c.health() == {"controller": "ok", "store": "ok", "ray": "ok"}
    backend.health_answer = "GCS unreachable: timed out"
    assert c.health()["ray"] == "GCS unreachable: timed out"
    store.engine.dispose()
    broken = store.engine.url.set(database="/nonexistent/dir/corral.db")
    import sqlalchemy as sa

    store._engine = sa.create_engine(broken)  # type: ignore[misc]
    assert c.health()["store"].startswith("unreachable: ")


def test_a_lost_lock_stops_every_write_at_once(store: Store) -> None:
    class LostFence:
        def __init__(self) -> None:
            self.lost = False

        def check(self) -> None:
            if self.lost:
                raise LockLost("not renewed within 15 s")

        def verify(self, connection: object) -> None:
            self.check()

    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    fence, fatal = LostFence(), []
    c = _controller(store, backend, clock, fence=fence, on_fatal=fatal.append)
    c.poll_s = 0.01
    c.start()
    fence.lost = True
    job = _submit(store, clock, gpus_per_node=1)
    c._thread.join(timeout=10)  # type: ignore[union-attr]
    assert not c._thread.is_alive()  # type: ignore[union-attr]
    assert fatal and "lost the controller lease" in fatal[0]
    assert store.get(job).state is JobState.PENDING and not backend.started  # type: ignore[union-attr]
    assert c.health()["controller"].startswith("lost the controller lease")
    with pytest.raises(LockLost):  # nor does a controller start without it
        _controller(store, backend, clock, fence=fence).start()


def test_a_failed_step_neither_loses_nor_double_counts_a_failed_start(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = _controller(store, backend, clock)
    job = _submit(store, clock, gpus_per_node=8, data_region="cn-north")
    c.step()
    node = store.get(job).allocation.node_ids[0]  # type: ignore[union-attr]
    for attempt in range(2):
        _fail_start(backend, job, attempt, clock.now(), node=node)
        c.step()
        clock.advance_to(store.get(job).retry_at or clock.now())  # type: ignore[union-attr]
        c.step()
        assert store.get(job).allocation.node_ids == (node,)  # type: ignore[union-attr]
    _fail_start(backend, job, 2, clock.now(), node=node)  # the third: the step that cordons fails
    real_apply = store.apply

    def locked(batch: object, fence: object = None) -> None:
        raise RuntimeError("database is locked")

    store.apply = locked  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        c.step()
    assert node not in controller_state.cordons(store)
    store.apply = real_apply  # type: ignore[method-assign]
    c.step()  # the same events again: counted once, the cordon written
    assert node in controller_state.cordons(store)
    assert c._start_failures.get(node, 0) == 0  # reset by the cordon, not left at 4
    assert [e.kind for e in store.events(job)].count("NODE_CORDONED") == 1
