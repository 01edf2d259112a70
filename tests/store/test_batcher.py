"""Group commit: submit_many and the SubmitBatcher give exactly what one-by-one submits would."""

from __future__ import annotations

import threading

import pytest

from scheduler.model.job import JobSpec
from scheduler.store.batcher import SubmitBatcher
from scheduler.store.errors import IdempotencyConflict
from scheduler.store.store import Store


def test_submit_many_matches_submit_semantics(store: Store) -> None:
    keyed = JobSpec(name="a", command=["true"], idempotency_key="k1")
    other = JobSpec(name="b", command=["true"], idempotency_key="k1")  # same key, different spec
    results = store.submit_many(
        [(keyed, "team-a", 1.0), (JobSpec(command=["true"]), "team-a", 2.0), (keyed, "team-a", 3.0),
         (other, "team-a", 4.0), (other, "team-b", 5.0)]
    )  # fmt: skip
    first, plain, again, conflict, team_b = results
    assert not isinstance(first, IdempotencyConflict) and first[1]
    assert not isinstance(plain, IdempotencyConflict) and plain[1]
    assert not isinstance(again, IdempotencyConflict) and again == (first[0], False)  # same job back
    assert isinstance(conflict, IdempotencyConflict)
    assert not isinstance(team_b, IdempotencyConflict) and team_b[1]  # keys are per team
    ids = [first[0].id, plain[0].id, team_b[0].id]
    assert len(set(ids)) == 3 and all(store.get(i) is not None for i in ids)
    assert [e.kind for e in store.events(first[0].id)] == ["SUBMITTED"]


def test_concurrent_submissions_through_the_batcher_are_all_durable_and_distinct(store: Store) -> None:
    batcher = SubmitBatcher(store)
    ids: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for i in range(40):
            record, created = batcher.submit(JobSpec(name=f"c{c}-{i}", command=["true"]), "t", 1.0).result(30)
            assert created
            with lock:
                ids.append(record.id)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert len(ids) == len(set(ids)) == 320
    assert {r.id for r in store.jobs()} == set(ids)


def test_a_conflict_in_a_batch_fails_only_its_own_request(store: Store) -> None:
    batcher = SubmitBatcher(store)
    store.submit(JobSpec(name="x", command=["true"], idempotency_key="dup"), "t", 1.0)
    bad = batcher.submit(JobSpec(name="y", command=["true"], idempotency_key="dup"), "t", 2.0)
    good = batcher.submit(JobSpec(name="z", command=["true"]), "t", 2.0)
    with pytest.raises(IdempotencyConflict):
        bad.result(30)
    assert good.result(30)[1]
    batcher.close()
