"""Submissions: ids, events, idempotency, concurrency; and the read side that lists them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from scheduler.model.job import JobState
from scheduler.model.queue import Queue
from scheduler.store.errors import IdempotencyConflict
from scheduler.store.store import Store
from tests.store.helpers import spec


def test_submit_assigns_increasing_ids_and_a_submitted_event(store: Store) -> None:
    records = [store.submit(spec(name=f"j{i}"), "team-a", 100.0 + i)[0] for i in range(3)]
    assert [r.id for r in records] == ["1", "2", "3"]
    first = records[0]
    assert first.state is JobState.PENDING
    assert first.job.submitted_at == 100.0
    assert first.pending_reason == "WaitingForScheduling"
    assert first.job.runtime_hint_s is None
    assert store.get("1") == first
    assert store.get("4") is None
    assert store.get("not-an-id") is None
    (event,) = store.events("2")
    assert (event.job_id, event.kind, event.time, event.seq) == ("2", "SUBMITTED", 101.0, 2)


def test_same_key_and_spec_returns_the_same_job(store: Store) -> None:
    first, created = store.submit(spec(idempotency_key="k1"), "team-a", 1.0)
    again, created_again = store.submit(spec(idempotency_key="k1"), "team-a", 2.0)
    assert (created, created_again) == (True, False)
    assert again == first
    assert len(store.jobs()) == 1
    assert len(store.events(first.id)) == 1


def test_same_key_with_another_spec_conflicts(store: Store) -> None:
    store.submit(spec(idempotency_key="k1"), "team-a", 1.0)
    with pytest.raises(IdempotencyConflict):
        store.submit(spec(idempotency_key="k1", gpus_per_node=8), "team-a", 2.0)
    assert len(store.jobs()) == 1


def test_same_key_in_two_teams_makes_two_jobs(store: Store) -> None:
    a, _ = store.submit(spec(idempotency_key="k1"), "team-a", 1.0)
    b, created = store.submit(spec(idempotency_key="k1"), "team-b", 1.0)
    assert created and a.id != b.id


def test_concurrent_submissions_lose_nothing_and_deduplicate(store: Store) -> None:
    def submitter(thread: int) -> tuple[list[str], list[str]]:
        plain, keyed = [], []
        for i in range(15):
            plain.append(store.submit(spec(name=f"t{thread}-{i}"), "team-a", float(i))[0].id)
            if i % 3 == 0:  # every thread submits the same five keyed jobs: five jobs in all
                keyed.append(store.submit(spec(idempotency_key=f"k{i}"), "team-a", float(i))[0].id)
        return plain, keyed

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(submitter, range(8)))
    plain = [job_id for ids, _ in results for job_id in ids]
    keyed = {job_id for _, ids in results for job_id in ids}
    assert len(plain) == len(set(plain)) == 8 * 15
    assert len(keyed) == 5 and not keyed & set(plain)
    assert sorted(int(r.id) for r in store.jobs()) == list(range(1, 8 * 15 + 5 + 1))
    assert {r.id for r in store.jobs()} == set(plain) | keyed


def test_listing_filters_and_counts(store: Store) -> None:
    store.submit(spec(queue="q1"), "team-a", 1.0)
    store.submit(spec(queue="q2"), "team-b", 2.0)
    store.submit(spec(queue="q2"), "team-b", 3.0)
    assert [r.id for r in store.jobs(team="team-b")] == ["2", "3"]
    assert [r.id for r in store.jobs(queue="q2", newest_first=True, limit=1)] == ["3"]
    assert store.jobs(states=[JobState.RUNNING]) == []
    assert [r.id for r in store.active()] == ["1", "2", "3"]
    assert store.counts() == {("q1", "PENDING"): 1, ("q2", "PENDING"): 2}


def test_queues_are_replaced_as_a_set(store: Store) -> None:
    q1 = Queue(name="q1", quota={"H100": 16}, cohort="c", weight=2.0)
    q2 = Queue(name="q2", borrowing_limit=4)
    store.sync_queues([q1, q2])
    assert store.queues() == [q1, q2]
    store.sync_queues([q2])
    assert store.queues() == [q2]
