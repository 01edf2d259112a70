"""The controller's preemption, the requeue that follows it, and a rejection each leave an audit
record naming who, what (the job, its attempt, the nodes with their regions, the residency check)
and why, on SQLite and on PostgreSQL; the chain still verifies. The real Controller, a scripted
backend (tests/control/scripted.py)."""

from __future__ import annotations

from scheduler.backends.base import EventKind
from scheduler.clock import VirtualClock
from scheduler.config.live import default_cluster_yaml, parse_live_config
from scheduler.control.controller import Controller
from scheduler.model.job import JobSpec, JobState
from scheduler.model.records import AuditRecord
from scheduler.store import audit_log
from scheduler.store.store import Store
from tests.control.scripted import ScriptedBackend

# cn-north: 2 nodes of 8 H100 (one rack), cn-east the same; priority classes low, normal, high.
CONFIG = parse_live_config(default_cluster_yaml(4, 8, ["cn-north", "cn-east"], 1))
NORTH = sorted(n.id for n in CONFIG.cluster.nodes if n.region == "cn-north")


def _submit(store: Store, now: float, **spec: object) -> str:
    return store.submit(JobSpec(command=["true"], **spec), "team-a", now)[0].id  # type: ignore[arg-type]


def _only(store: Store, job_id: str, decision: str) -> AuditRecord:
    found = [a for a in store.audit(job_id, limit=None) if a.decision == decision]
    assert len(found) == 1, (decision, store.audit(job_id, limit=None))
    return found[0]


def test_a_preemption_its_requeue_and_a_rejection_are_each_audited_and_chained(store: Store) -> None:
    clock, backend = VirtualClock(1000.0), ScriptedBackend(list(CONFIG.cluster.nodes))
    c = Controller(store, backend, CONFIG, clock, min_decide_interval_s=0.0)
    store.sync_queues(list(c.queues.values()))
    c.recover()
    low = _submit(store, 1000.0, nodes=2, gpus_per_node=8, priority="low", data_region="cn-north")
    c.step()
    backend.emit(EventKind.STARTED, low, 0, 1001)
    clock.advance_to(1100)  # past the policy's 10 s protection
    c.step()

    # a high-priority job bound to cn-north: cn-east is free, but only the low job's nodes will do
    high = _submit(store, 1100.0, gpus_per_node=8, priority="high", data_region="cn-north")
    c.step()
    assert (low, 0, 30.0) in backend.stopped and store.get(low).state is JobState.PREEMPTING  # type: ignore[union-attr]
    preempt = _only(store, low, "preempt")
    assert (preempt.actor, preempt.time, preempt.attempt) == ("controller", 1100.0, 0)
    assert sorted(preempt.nodes) == NORTH and preempt.node_regions == ("cn-north", "cn-north")
    assert preempt.data_region == "cn-north" and preempt.residency_ok
    assert "higher priority" in preempt.detail and "(rule: priority)" in preempt.detail
    assert f"job {high}" not in preempt.detail  # the victim's team reads why, never for whom:
    assert preempt.related_job == high and preempt.private_detail.startswith(f"for job {high}: ")  # admins do

    # the victim saved its checkpoint and stopped: requeued with its identity, audited on the nodes it left
    backend.emit(EventKind.STOPPED, low, 0, 1105)
    clock.advance_to(1105)
    c.step()
    back = store.get(low)
    assert back is not None and back.state is JobState.PENDING and back.job.restart_count == 1
    requeue = _only(store, low, "requeue")
    assert (requeue.actor, requeue.time, requeue.attempt) == ("controller", 1105.0, 0)
    assert sorted(requeue.nodes) == NORTH and requeue.node_regions == ("cn-north", "cn-north")
    assert requeue.data_region == "cn-north" and requeue.residency_ok
    assert requeue.detail == "preempted: requeued, resumes from its checkpoint"
    placed = _only(store, high, "place")  # the preemptor took one of the freed nodes, checked
    assert placed.residency_ok and placed.node_regions == ("cn-north",) and placed.nodes[0] in NORTH

    # three 8-GPU nodes in cn-north, which has two: it can never run there
    wide = _submit(store, 1106.0, nodes=3, gpus_per_node=8, data_region="cn-north")
    clock.advance_to(1106)
    c.step()
    rejected = store.get(wide)
    assert rejected is not None and rejected.state is JobState.FAILED
    reject = _only(store, wide, "reject")
    assert (reject.actor, reject.time, reject.attempt) == ("controller", 1106.0, 0)
    assert reject.nodes == () and reject.node_regions == () and reject.data_region == "cn-north"
    assert reject.detail == rejected.pending_reason and "cn-north" in reject.detail
    assert [e.kind for e in store.events(wide)] == ["SUBMITTED", "REJECTED"]

    records = store.audit(limit=None)
    order = [(a.job_id, a.decision) for a in records].index
    assert order((low, "preempt")) < order((low, "requeue")) < order((wide, "reject"))
    checked = audit_log.verify(store.engine, store.audit_head())
    assert checked.count == checked.last_seq == len(records)
    assert [e.seq for e in store.audit_chain(limit=None)] == [a.seq for a in records]
