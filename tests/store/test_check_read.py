"""`corral check` reading a real store (SQLite and PostgreSQL) in one snapshot: a consistent store is
clean; a job row that disappeared is found by its SUBMITTED event and, on SQLite, by the hole it
leaves below the id high-water mark; acknowledged ids are looked up."""

from __future__ import annotations

import sqlalchemy as sa

from scheduler.check import find_violations, run_check
from scheduler.check.invariants import GPU_HELD_TWICE, MISSING_JOB
from scheduler.check.read import read_store
from scheduler.model.queue import Queue
from scheduler.model.records import Batch, UsageRecord
from scheduler.store.store import Store
from tests.store.helpers import allocation, running, spec


def _fill(store: Store) -> list[str]:
    store.sync_queues([Queue(name="team-a", quota={"H100": 8})])
    ids = [store.submit(spec(gpus_per_node=2), "a", 1.0)[0].id for _ in range(4)]
    first, second = (store.get(i) for i in ids[:2])
    assert first is not None and second is not None
    store.apply(
        Batch(
            updates=[
                running(first, allocation(("n1", (0, 1)))),
                running(second, allocation(("n1", (2, 3)))),
            ],
            usage=[UsageRecord("team-a", 0.0, 10.0, 4)],
        )
    )
    return ids


def test_a_consistent_store_reads_clean(store: Store) -> None:
    ids = _fill(store)
    state = read_store(store, acknowledged=[*ids, "99"])
    assert [r.id for r in state.jobs] == ids
    assert state.allocation_rows == {
        ("n1", 0): (ids[0], 0),
        ("n1", 1): (ids[0], 0),
        ("n1", 2): (ids[1], 0),
        ("n1", 3): (ids[1], 0),
    }
    assert state.usage == {"team-a": 4} and [q.name for q in state.queues] == ["team-a"]
    assert state.present == frozenset(ids) and state.submitted_without_row == [] and state.id_gaps == []
    assert [(v.kind, v.jobs) for v in find_violations(state)] == [(MISSING_JOB, ("99",))]


def test_a_vanished_job_row_is_found(store: Store) -> None:
    ids = _fill(store)
    with store.engine.begin() as connection:  # what a bad restore or a stray DELETE would do
        connection.execute(
            sa.text("DELETE FROM jobs WHERE id IN (:a, :b)"), {"a": int(ids[2]), "b": int(ids[3])}
        )
    state = read_store(store)
    assert state.submitted_without_row == [ids[2], ids[3]]
    if store.dialect == "sqlite":  # ids are dense up to the AUTOINCREMENT high-water mark
        assert state.id_gaps == [(int(ids[2]), int(ids[3]))]
    report = run_check(store, ray=False)
    assert not report.ok and {v.kind for v in report.violations} == {MISSING_JOB}
    assert any(v.jobs == (ids[2], ids[3]) for v in report.violations)


def test_a_corrupted_allocation_is_read_as_it_is(store: Store) -> None:
    ids = _fill(store)
    with store.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE jobs SET allocation = (SELECT allocation FROM jobs WHERE id = :a) WHERE id = :b"),
            {"a": int(ids[0]), "b": int(ids[1])},
        )
    twice = [v for v in run_check(store, ray=False).violations if v.kind == GPU_HELD_TWICE]
    assert [v.jobs for v in twice] == [(ids[0], ids[1])] * 2
