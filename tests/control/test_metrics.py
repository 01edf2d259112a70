"""The exporter: state gauges equal a recount from the store, also after a controller restart."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from scheduler.backends.base import EventKind
from scheduler.clock import VirtualClock
from scheduler.config.live import default_cluster_yaml, parse_live_config
from scheduler.control.controller import Controller
from scheduler.model.job import JobSpec, JobState
from scheduler.store.store import Store
from tests.control.scripted import ScriptedBackend

CONFIG = parse_live_config(default_cluster_yaml(2, 8, ["cn-north"], 1))


def _started(store: Store, backend: ScriptedBackend, clock: VirtualClock) -> Controller:
    c = Controller(store, backend, CONFIG, clock, min_decide_interval_s=0.0)
    c.start()  # reconcile, attach the metrics, run the loop thread
    c.stop()  # ... and stop the thread: the test steps by hand
    return c


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _recount(store: Store) -> dict[str, float]:
    """What the store says: GPUs held, and unfinished jobs by state."""
    held = store.held_gpus()
    by_state: dict[str, float] = {}
    for rec in store.jobs(
        states=[JobState.PENDING, JobState.STARTING, JobState.RUNNING, JobState.PREEMPTING]
    ):
        by_state[rec.state.value] = by_state.get(rec.state.value, 0) + 1
    return {"allocated": float(len(held)), **by_state}


def _exported(registry: CollectorRegistry) -> dict[str, float]:
    out = {
        "allocated": _value(registry, "corral_gpus", region="cn-north", gpu_type="H100", state="allocated")
    }
    for state in ("PENDING", "STARTING", "RUNNING", "PREEMPTING"):
        value = _value(registry, "corral_jobs", queue="default", state=state)
        if value:
            out[state] = value
    return out


def test_gauges_equal_a_recount_from_the_store_also_after_a_restart(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = _started(store, backend, clock)
    ids = [store.submit(JobSpec(gpus_per_node=8, command=["true"]), "t", 1000.0)[0].id for _ in range(3)]
    c.step()  # two start, one waits
    for job_id in ids[:2]:
        backend.emit(EventKind.STARTED, job_id, 0, 1001)
    clock.advance_to(1001)
    c.step()
    reg = c.metrics.registry
    assert _exported(reg) == _recount(store) == {"allocated": 16.0, "PENDING": 1.0, "RUNNING": 2.0}
    assert _value(reg, "corral_gpus", region="cn-north", gpu_type="H100", state="free") == 0
    assert (
        _value(reg, "corral_queue_pending_jobs", queue="default", reason="QuotaExceeded")
        + _value(reg, "corral_queue_pending_jobs", queue="default", reason="Resources")
        == 1
    )
    assert _value(reg, "corral_jobs_submitted_total", queue="default") == 3
    assert _value(reg, "corral_job_wait_seconds_count", queue="default") == 2
    assert _value(reg, "corral_leader") == 0  # its thread was stopped

    backend.emit(EventKind.EXITED, ids[0], 0, 1010, code=0)  # one ends; the waiting one starts
    clock.advance_to(1010)
    c.step()
    assert _value(reg, "corral_jobs_finished_total", queue="default", result="SUCCEEDED") == 1
    assert _value(reg, "corral_job_gpu_seconds_total", queue="default") == 8 * (1010 - 1000)

    restarted = _started(store, backend, clock)  # a new controller process over the same store
    clock.advance_to(1011)
    restarted.step()
    assert (
        _exported(restarted.metrics.registry)
        == _recount(store)
        == {
            "allocated": 16.0,
            "STARTING": 1.0,
            "RUNNING": 1.0,
        }
    )
    assert _value(restarted.metrics.registry, "corral_jobs", queue="default", state="PENDING") == 0


def test_a_preemption_is_counted_once_with_its_reason(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = _started(store, backend, clock)
    low = store.submit(JobSpec(nodes=2, gpus_per_node=8, priority="low", command=["x"]), "t", 1000.0)[0].id
    c.step()
    backend.emit(EventKind.STARTED, low, 0, 1001)
    clock.advance_to(1100)  # past the 10 s protection of the default policy
    c.step()
    store.submit(JobSpec(gpus_per_node=8, priority="high", command=["y"]), "t", 1100.0)
    c.step()
    assert (low, 0, 30.0) in backend.stopped
    backend.emit(EventKind.STOPPED, low, 0, 1105)
    clock.advance_to(1105)
    c.step()
    reg = c.metrics.registry
    assert _value(reg, "corral_jobs_preempted_total", queue="default", reason="preempt") == 1
    assert _value(reg, "corral_scheduling_decisions_total", kind="preempt") == 1
    assert _value(reg, "corral_scheduling_cycle_seconds_count") >= 3


def test_job_info_is_opt_in_and_its_series_go_when_the_job_ends(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = Controller(store, backend, CONFIG, clock, min_decide_interval_s=0.0, job_info_metrics=True)
    c.start()
    c.stop()
    job = store.submit(JobSpec(nodes=2, gpus_per_node=4, command=["x"]), "t", 1000.0)[0].id
    c.step()
    reg = c.metrics.registry
    nodes = sorted(n.id for n in CONFIG.cluster.nodes)
    assert [_value(reg, "corral_job_info", job_id=job, queue="default", node=n) for n in nodes] == [1.0, 1.0]
    backend.emit(EventKind.EXITED, job, 0, 1005, code=0)
    clock.advance_to(1005)
    c.step()
    assert (
        reg.get_sample_value("corral_job_info", {"job_id": job, "queue": "default", "node": nodes[0]}) is None
    )
    plain = _started(store, ScriptedBackend(list(CONFIG.cluster.nodes)), clock)  # default: not exported
    assert not [m for m in plain.metrics.registry.collect() if m.name == "corral_job_info"]
