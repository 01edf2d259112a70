"""Store.apply: one transaction that rewrites the controller's columns and keeps GPUs unique."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import sqlalchemy as sa

from scheduler.model.job import JobState
from scheduler.model.records import AuditRecord, Batch, EventRecord, JobRecord, StopReason
from scheduler.store.errors import AllocationConflict, JobNotFound
from scheduler.store.schema import allocations
from scheduler.store.store import Store
from tests.store.helpers import allocation, running, spec


def test_apply_round_trips_every_field(store: Store) -> None:
    submitted, _ = store.submit(spec(idempotency_key="k"), "team-a", 1.0)
    job = submitted.job.model_copy(
        update={
            "state": JobState.PREEMPTING,
            "started_at": 20.0,
            "first_started_at": 5.0,
            "restart_count": 2,
            "preemption_count": 1,
            "attained_gpu_s": 123.5,
        }
    )
    held = allocation(("n1", (0, 1)), ("n2", (3,)))
    record = JobRecord(
        job=job,
        allocation=held,
        pending_reason=None,
        stop_reason=StopReason.PREEMPT,
        stop_requested_at=30.0,
        updated_at=31.0,
    )
    event = EventRecord(job_id=record.id, time=30.0, kind="PREEMPTING", message="for 7", attempt=2, node="n1")
    decision = AuditRecord(
        time=30.0,
        job_id=record.id,
        decision="preempt",
        attempt=2,
        nodes=("n1", "n2"),
        node_regions=("eu", "eu"),
        data_region="eu",
        residency_ok=True,
        detail="for job 7",
    )
    store.apply(Batch(updates=[record], events=[event], audit=[decision]))

    assert store.get(record.id) == record
    assert store.held_gpus() == {("n1", 0): "1", ("n1", 1): "1", ("n2", 3): "1"}
    assert store.events(record.id)[-1] == replace(event, seq=2)
    assert store.audit(record.id) == [replace(decision, seq=1)]

    done = JobRecord(
        job=job.model_copy(update={"state": JobState.FAILED, "finished_at": 40.0, "exit_code": 3}),
        updated_at=40.0,
    )
    store.apply(Batch(updates=[done]))
    assert store.get(record.id) == done
    assert store.held_gpus() == {}
    assert store.get(record.id).job.spec == submitted.job.spec  # type: ignore[union-attr]


def test_a_conflicting_allocation_rolls_back_the_whole_batch(store: Store) -> None:
    a, b, c = (store.submit(spec(name=n), "team-a", 1.0)[0] for n in "abc")
    store.apply(Batch(updates=[running(a, allocation(("n1", (0, 1))))]))
    before = (store.get(b.id), store.get(c.id), store.events(), store.audit(), store.held_gpus())

    batch = Batch(
        updates=[running(c, allocation(("n2", (0,)))), running(b, allocation(("n1", (1, 2))))],
        events=[EventRecord(job_id=b.id, time=2.0, kind="PLACED")],
        audit=[AuditRecord(time=2.0, job_id=b.id, decision="place")],
        pending_reasons={c.id: "Resources"},
    )
    with pytest.raises(AllocationConflict) as caught:
        store.apply(batch)
    assert (caught.value.node, caught.value.gpu) == ("n1", 1)
    assert set(caught.value.job_ids) == {a.id, b.id}
    assert (store.get(b.id), store.get(c.id), store.events(), store.audit(), store.held_gpus()) == before


def test_two_jobs_of_one_batch_on_one_gpu_conflict(store: Store) -> None:
    a, b = (store.submit(spec(name=n), "team-a", 1.0)[0] for n in "ab")
    with pytest.raises(AllocationConflict, match="GPU 4 of node n9"):
        same = allocation(("n9", (4,)))
        store.apply(Batch(updates=[running(a, same), running(b, same)]))
    assert store.held_gpus() == {}


def test_a_gpu_may_pass_between_jobs_within_a_batch(store: Store) -> None:
    a, b = (store.submit(spec(name=n), "team-a", 1.0)[0] for n in "ab")
    store.apply(Batch(updates=[running(a, allocation(("n1", (0,))))]))
    store.apply(Batch(updates=[running(b, allocation(("n1", (0,)))), running(a, None)]))
    assert store.held_gpus() == {("n1", 0): b.id}


def test_an_unknown_job_fails_the_batch(store: Store) -> None:
    a, _ = store.submit(spec(), "team-a", 1.0)
    ghost = running(a, None).job.model_copy(update={"id": "999"})
    with pytest.raises(JobNotFound, match="job 999 not found"):
        store.apply(Batch(updates=[running(a, allocation(("n1", (0,)))), JobRecord(job=ghost)]))
    assert store.get(a.id) == a


def test_pending_reasons_touch_only_pending_jobs(store: Store) -> None:
    a, b = (store.submit(spec(name=n), "team-a", 1.0)[0] for n in "ab")
    store.apply(Batch(updates=[running(a, allocation(("n1", (0,))))]))
    store.apply(Batch(pending_reasons={a.id: "Priority", b.id: "QuotaExceeded: q1 at 8/8", "404": "x"}))
    assert store.get(a.id).pending_reason is None  # type: ignore[union-attr]
    assert store.get(b.id).pending_reason == "QuotaExceeded: q1 at 8/8"  # type: ignore[union-attr]


def test_a_thousand_pending_reasons_in_one_batch(store: Store) -> None:
    ids = [store.submit(spec(name=f"j{i}"), "team-a", 1.0)[0].id for i in range(1000)]
    started = time.perf_counter()
    store.apply(Batch(pending_reasons={job_id: f"Resources: {job_id}" for job_id in ids}))
    elapsed = time.perf_counter() - started
    print(f"{store.dialect}: 1,000 pending reasons in {elapsed * 1000:.1f} ms")  # reported, not asserted
    assert {r.pending_reason for r in store.jobs()} == {f"Resources: {job_id}" for job_id in ids}
    with store.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(allocations)).scalar_one() == 0
