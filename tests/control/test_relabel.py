"""Data residency under change: a node whose region label changes while jobs run there.

The pure decision (region_change) on hand-built nodes and records; then the real Controller on a
virtual clock, a real SQLite store and the scripted backend: the jobs outside their region are
stopped at once, requeued (restart_count + 1, not a failure) and audited, the others keep running,
nothing is placed on the GPUs still held meanwhile, and the node is scheduled under its new region.
A property test: after any sequence of label changes, once the stops complete, no job holds GPUs on
a node outside its data region.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.backends.base import EventKind
from scheduler.clock import VirtualClock
from scheduler.config.live import LiveConfig, parse_live_config
from scheduler.control.controller import Controller
from scheduler.control.relabel import UNKNOWN_REGION, region_change
from scheduler.control.transitions import Step, Stop, holds_gpus
from scheduler.model.cluster import ANY, Node
from scheduler.model.job import Job, JobSpec, JobState
from scheduler.model.plan import Allocation, NodeAllocation
from scheduler.model.records import JobRecord, StopReason
from scheduler.store.store import Store
from tests.control.scripted import ScriptedBackend

CLUSTER = """
regions:
  - name: ra
    racks:
      - {name: r1, nodes: 2, gpu_type: H100, gpus_per_node: 8, cpus: 2, memory_gb: 16}
  - name: rb
    racks:
      - {name: r2, nodes: 1, gpu_type: H100, gpus_per_node: 8, cpus: 2, memory_gb: 16}
queues:
  - {name: q, quota: {H100: 24}}
policy:
  default_min_runtime_s: 0
"""
CONFIG: LiveConfig = parse_live_config(CLUSTER)
A0, A1, B0 = (n.id for n in CONFIG.cluster.nodes)


# --- the pure decision ------------------------------------------------------------------------------


def _node(node_id: str, region: str) -> Node:
    return Node(id=node_id, region=region, rack=f"{region}/r", gpu_type="H100")


def _holding(job_id: str, region: str, *nodes: str, stop: StopReason | None = None) -> JobRecord:
    spec = JobSpec(command=["true"], nodes=len(nodes), gpus_per_node=2, data_region=region)
    job = Job(id=job_id, spec=spec, state=JobState.RUNNING, started_at=1.0)
    alloc = Allocation(nodes=tuple(NodeAllocation(node=n, gpus=(0, 1)) for n in nodes))
    return JobRecord(job=job, allocation=alloc, stop_reason=stop, stop_requested_at=1.0 if stop else None)


def test_region_change_stops_only_jobs_outside_their_region_on_the_changed_node() -> None:
    old = {"x": _node("x", "ra"), "y": _node("y", "ra")}
    new = {"x": _node("x", "rb"), "y": _node("y", "ra")}
    records = [
        _holding("1", "ra", "x"),  # x left ra: stop
        _holding("2", ANY, "x"),  # no data region: keeps running
        _holding("3", "rb", "x"),  # x is now in its region: keeps running
        _holding("4", "ra", "y"),  # y did not change
        _holding("5", "ra", "y", "x"),  # a gang with one rank on x: the whole gang stops
        _holding("6", "ra", "x", stop=StopReason.REGION_CHANGE),  # already stopping for it
    ]
    change = region_change(old, new, records)
    assert change.moved == {"x": ("ra", "rb")}
    assert [(s.job_id, s.node, s.old_region, s.new_region, s.data_region) for s in change.stops] == [
        ("1", "x", "ra", "rb", "ra"),
        ("5", "x", "ra", "rb", "ra"),
    ]


def test_a_node_seen_for_the_first_time_is_checked_against_its_jobs() -> None:
    """After a restart the region a job was placed under is unknown: its data region decides."""
    change = region_change({}, {"x": _node("x", "rb")}, [_holding("1", "ra", "x"), _holding("2", "rb", "x")])
    assert change.moved == {}
    assert [(s.job_id, s.old_region, s.new_region) for s in change.stops] == [("1", UNKNOWN_REGION, "rb")]


def test_nothing_changes_when_no_region_did() -> None:
    nodes = {"x": _node("x", "ra")}
    moved_rack = {"x": _node("x", "ra").model_copy(update={"rack": "ra/other", "zone": "z9"})}
    assert region_change(nodes, moved_rack, [_holding("1", "ra", "x")]).stops == ()


# --- the controller -----------------------------------------------------------------------------------


def _controller(store: Store, backend: ScriptedBackend, clock: VirtualClock) -> Controller:
    c = Controller(store, backend, CONFIG, clock, min_decide_interval_s=0.0)
    store.sync_queues(list(c.queues.values()))
    c.recover()
    return c


def _submit(store: Store, clock: VirtualClock, region: str, gpus: int) -> str:
    spec = JobSpec(command=["true"], queue="q", gpus_per_node=gpus, data_region=region)
    return store.submit(spec, "team", clock.now())[0].id


def _relabel(backend: ScriptedBackend, node_id: str, region: str) -> None:
    backend.node_list = [
        n.model_copy(update={"region": region}) if n.id == node_id else n for n in backend.node_list
    ]


def _get(store: Store, job_id: str) -> JobRecord:
    rec = store.get(job_id)
    assert rec is not None
    return rec


def _node_of(store: Store, job_id: str) -> str:
    alloc = _get(store, job_id).allocation
    assert alloc is not None
    return alloc.node_ids[0]


def test_a_relabelled_node_stops_requeues_and_audits_the_jobs_outside_their_region(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = _controller(store, backend, clock)
    on_b = _submit(store, clock, "rb", 8)  # fills B0, the only node of rb
    in_a = _submit(store, clock, "ra", 8)  # a whole node of ra
    anywhere = _submit(store, clock, ANY, 4)  # the other node of ra
    c.step()
    for job in (on_b, in_a, anywhere):
        backend.emit(EventKind.STARTED, job, 0, clock.now())
    waits = _submit(store, clock, "rb", 8)  # rb is full: waits
    clock.advance_to(clock.now() + 1.0)
    c.step()
    assert _get(store, waits).state is JobState.PENDING
    moved, other = _node_of(store, in_a), _node_of(store, anywhere)
    assert {moved, other} == {A0, A1}

    # The node of the ra job is relabelled rb: that job stops at once; nothing takes its GPUs yet.
    _relabel(backend, moved, "rb")
    clock.advance_to(clock.now() + 1.0)
    c.step()
    rec = _get(store, in_a)
    assert rec.state is JobState.RUNNING and rec.stop_reason is StopReason.REGION_CHANGE
    assert backend.stopped[-1] == (in_a, 0, 0.0)
    assert _get(store, waits).state is JobState.PENDING  # the GPUs are still held by the leaving job
    assert all(_get(store, j).stop_reason is None for j in (on_b, anywhere))
    event = store.events(in_a)[-1]
    assert event.kind == "REGION_CHANGED" and event.node == moved
    assert f"node {moved} is now in region rb (was ra)" in event.message
    audit = [a for a in store.audit(in_a) if a.decision == "region_change"]
    assert len(audit) == 1 and audit[0].nodes == (moved,) and audit[0].node_regions == ("rb",)
    assert audit[0].data_region == "ra" and not audit[0].residency_ok and "was ra" in audit[0].detail
    clock.advance_to(clock.now() + 1.0)
    c.step()  # nothing new: the stop is not issued twice, no second audit entry
    assert len(backend.stopped) == 1
    assert len([a for a in store.audit(in_a) if a.decision == "region_change"]) == 1

    # The stop completes: requeued without penalty, and the node is scheduled as rb.
    backend.emit(EventKind.STOPPED, in_a, 0, clock.now())
    clock.advance_to(clock.now() + 1.0)
    c.step()
    rec = _get(store, in_a)
    assert rec.state is JobState.PENDING and rec.job.restart_count == 1 and rec.job.preemption_count == 0
    assert rec.allocation is None and rec.stop_reason is None
    assert [e.kind for e in store.events(in_a)][-2:] == ["REGION_CHANGED", "REQUEUED"]
    assert _get(store, waits).state is JobState.STARTING and _node_of(store, waits) == moved
    place = [a for a in store.audit(waits) if a.decision == "place"][-1]
    assert place.node_regions == ("rb",) and place.residency_ok
    # The ra job waits for ra (its one remaining node has 4 GPUs taken), never placed in rb.
    assert _get(store, in_a).state is JobState.PENDING
    assert store.held_gpus().get((moved, 0)) == waits


def test_jobs_without_a_data_region_keep_running_on_a_relabelled_node(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = _controller(store, backend, clock)
    job = _submit(store, clock, ANY, 8)
    c.step()
    backend.emit(EventKind.STARTED, job, 0, clock.now())
    c.step()
    _relabel(backend, _node_of(store, job), "rc")
    clock.advance_to(clock.now() + 1.0)
    c.step()
    rec = _get(store, job)
    assert rec.state is JobState.RUNNING and rec.stop_reason is None and backend.stopped == []
    assert not [a for a in store.audit() if a.decision == "region_change"]


def test_a_restarted_controller_stops_a_job_whose_node_now_reports_another_region(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = _controller(store, backend, clock)
    job = _submit(store, clock, "ra", 8)
    c.step()
    backend.emit(EventKind.STARTED, job, 0, clock.now())
    c.step()
    node = _node_of(store, job)
    # The controller dies; its node comes back with another region while it is down.
    _relabel(backend, node, "rb")
    restarted = _controller(store, backend, clock)
    assert backend.adopted == [(job, 0)]
    clock.advance_to(clock.now() + 1.0)
    restarted.step()
    assert _get(store, job).stop_reason is StopReason.REGION_CHANGE and backend.stopped[-1] == (job, 0, 0.0)
    backend.emit(EventKind.STOPPED, job, 0, clock.now())
    restarted.step()
    assert _get(store, job).state in (JobState.PENDING, JobState.STARTING)
    assert _get(store, job).job.restart_count == 1


def test_a_running_preemption_loses_its_grace_but_keeps_its_reason() -> None:
    from scheduler.control.relabel import RegionStop, stop_outside_region

    rec = _holding("1", "ra", "x", stop=StopReason.PREEMPT)
    step = Step()
    stop_outside_region(rec, RegionStop("1", "x", "ra", "rb", "ra"), 5.0, step)
    assert "1" not in step.records  # its reason (and so its end) stays the preemption's
    assert step.effects == [Stop(rec.job, 0.0)] and step.events[0].kind == "REGION_CHANGED"


# --- property: after any label changes, once stops complete, nobody runs outside its region -------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("relabel"), st.integers(0, 2), st.sampled_from(["ra", "rb"])),
        st.tuples(st.just("submit"), st.sampled_from(["ra", "rb", ANY]), st.sampled_from([2, 4, 8])),
        st.tuples(st.just("settle"), st.just(0), st.just("")),
    ),
    min_size=1,
    max_size=12,
)


def _settle(
    c: Controller, backend: ScriptedBackend, clock: VirtualClock, seen: dict[str, set[tuple[str, int]]]
) -> None:
    """Deliver what the backend would: every start starts, every stop stops."""
    for job_id, attempt in backend.started:
        if (job_id, attempt) not in seen["started"]:
            seen["started"].add((job_id, attempt))
            backend.emit(EventKind.STARTED, job_id, attempt, clock.now())
    for job_id, attempt, _grace in backend.stopped:
        if (job_id, attempt) not in seen["stopped"]:
            seen["stopped"].add((job_id, attempt))
            backend.emit(EventKind.STOPPED, job_id, attempt, clock.now())
    clock.advance_to(clock.now() + 0.5)
    c.step()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_after_any_label_changes_no_job_runs_outside_its_region(
    ops: list[tuple[str, object, object]],
) -> None:
    store = Store.open("sqlite://")
    try:
        clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
        c = _controller(store, backend, clock)
        seen: dict[str, set[tuple[str, int]]] = {"started": set(), "stopped": set()}
        ids = [A0, A1, B0]
        for op, a, b in ops:
            if op == "relabel":
                _relabel(backend, ids[int(a)], str(b))  # type: ignore[call-overload]
            elif op == "submit":
                _submit(store, clock, str(a), int(b))  # type: ignore[call-overload]
            clock.advance_to(clock.now() + 0.5)
            c.step()
            if op == "settle":
                _settle(c, backend, clock, seen)
        for _ in range(4):  # the stops complete (and what they free is placed and started)
            _settle(c, backend, clock, seen)
        regions = {n.id: n.region for n in backend.node_list}
        for rec in store.active():
            if holds_gpus(rec) and rec.job.spec.data_region != ANY:
                assert rec.allocation is not None
                outside = [n for n in rec.allocation.node_ids if regions[n] != rec.job.spec.data_region]
                assert not outside, (rec.id, rec.state, rec.stop_reason, outside, regions)
        held = store.held_gpus()
        for rec in store.active():
            if holds_gpus(rec):
                assert rec.allocation is not None
                assert all(held[(n.node, g)] == rec.id for n in rec.allocation.nodes for g in n.gpus)
    finally:
        store.close()


def test_the_decision_is_pure_over_its_inputs() -> None:
    old = {"x": _node("x", "ra")}
    new = {"x": _node("x", "rb")}
    records = [_holding("1", "ra", "x")]
    first = region_change(old, new, records)
    assert region_change(old, new, records) == first
    assert old["x"].region == "ra" and records[0].stop_reason is None
    assert replace(first) == first
