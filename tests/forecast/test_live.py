"""The forecaster beside a live controller (over a scripted backend and a real SQLite store)."""

from __future__ import annotations

import time

from scheduler.backends.base import EventKind
from scheduler.clock import VirtualClock
from scheduler.config.live import LiveConfig, default_cluster_yaml, parse_live_config
from scheduler.control.controller import Controller
from scheduler.forecast.live import attach_forecaster, finished_runtimes
from scheduler.model.job import JobSpec, JobState
from scheduler.store.store import Store
from tests.control.scripted import ScriptedBackend

CONFIG: LiveConfig = parse_live_config(default_cluster_yaml(2, 8, ["cn-north"], 1))
H = 3600.0


def _controller(store: Store, backend: ScriptedBackend, clock: VirtualClock) -> Controller:
    c = Controller(store, backend, CONFIG, clock, min_decide_interval_s=0.0)
    store.sync_queues(list(c.queues.values()))
    c.recover()
    return c


def _submit(store: Store, clock: VirtualClock, **spec: object) -> str:
    rec, _ = store.submit(JobSpec(command=["true"], **spec), "team-a", clock.now())  # type: ignore[arg-type]
    return rec.id


def test_estimates_reach_the_view_from_a_replay_of_the_last_cycle(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = _controller(store, backend, clock)
    forecaster = attach_forecaster(c, store, CONFIG, interval_s=60)
    assert forecaster.refresh() is None  # no cycle yet: nothing to replay
    big = _submit(store, clock, nodes=2, gpus_per_node=8, time_limit_s=H, preemptible=False)
    c.step()
    backend.emit(EventKind.STARTED, big, 0, 1001)
    clock.advance_to(1100)
    waiting = _submit(store, clock, gpus_per_node=8, time_limit_s=H)
    c.step()
    assert store.get(waiting).state is JobState.PENDING  # type: ignore[union-attr]
    forecast = forecaster.refresh()
    assert forecast is not None and forecast.time == 1100
    assert c.view().estimated_starts[waiting] == 1000 + H  # when the gang reaches its time limit
    assert forecaster.refresh() is None  # nothing changed since: no new replay
    clock.advance_to(1200)
    c.step()  # a periodic cycle: a new state, replayed again, same answer
    c.step()
    assert c.scheduling_state() is not None


def test_the_forecaster_thread_publishes_and_stops_with_the_controller(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = _controller(store, backend, clock)
    attach_forecaster(c, store, CONFIG, interval_s=0.05)
    _submit(store, clock, nodes=2, gpus_per_node=8, time_limit_s=H, preemptible=False)
    waiting = _submit(store, clock, gpus_per_node=8, time_limit_s=H)
    c.start()
    try:
        deadline = time.monotonic() + 30
        while waiting not in c.view().estimated_starts and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.view().estimated_starts[waiting] == 1000 + H
    finally:
        c.stop()
    assert not any(t.name == "corral-forecast" and t.is_alive() for t in __import__("threading").enumerate())


def test_runtimes_are_learned_from_jobs_that_ended_on_their_own(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = _controller(store, backend, clock)
    done = _submit(store, clock, gpus_per_node=8)
    cancelled = _submit(store, clock, gpus_per_node=8)
    c.step()
    backend.emit(EventKind.STARTED, done, 0, 1000)
    backend.emit(EventKind.STARTED, cancelled, 0, 1000)
    clock.advance_to(1250)
    backend.emit(EventKind.EXITED, done, 0, 1250, code=0)
    store.request_cancel(cancelled, 0.0, 1250)
    c.step()
    assert list(finished_runtimes(store)()) == [("default", 250.0)]
