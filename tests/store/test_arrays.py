"""Job arrays in the store: all tasks in one transaction, idempotent, cancelled together."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from scheduler.model.job import JobState
from scheduler.model.records import Batch, JobRecord
from scheduler.store.errors import IdempotencyConflict, JobNotFound
from scheduler.store.schema import jobs
from scheduler.store.store import Store
from tests.store.helpers import spec


def test_one_task_per_index_the_array_id_is_the_first_tasks(store: Store) -> None:
    store.submit(spec(), "team-a", 0.5)  # ids do not start at 1
    tasks, created = store.submit_array(spec(array="3,5-9:2%2"), [3, 5, 7, 9], "team-a", 1.0)
    assert created
    head = tasks[0].id
    assert [(t.job.array_id, t.job.array_index) for t in tasks] == [(head, i) for i in (3, 5, 7, 9)]
    assert all(t.state is JobState.PENDING and t.job.array_max_running == 2 for t in tasks)
    assert store.array_tasks(head) == tasks
    assert [r.id for r in store.jobs(array_id=head)] == [t.id for t in tasks]
    assert store.get(tasks[2].id) == tasks[2]
    assert [e.message for e in store.events(tasks[1].id)] == [f"queue team-a, task 5 of array {head}"]
    # Each task is a job of its own: the controller sees them all.
    seen, _ = store.changed_since(0)
    assert {t.id for t in tasks} <= {r.id for r in seen}


def test_idempotent_by_key_and_conflict_for_another_spec(store: Store) -> None:
    first, created = store.submit_array(spec(array="0-2", idempotency_key="k"), [0, 1, 2], "team-a", 1.0)
    again, created_again = store.submit_array(
        spec(array="0-2", idempotency_key="k"), [0, 1, 2], "team-a", 2.0
    )
    assert created and not created_again and again == first
    with pytest.raises(IdempotencyConflict):
        store.submit_array(spec(array="0-3", idempotency_key="k"), [0, 1, 2, 3], "team-a", 3.0)
    assert len(store.jobs()) == 3


def test_all_or_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the rows are written leaves no task behind, not even the first."""
    real = Store._insert_tasks

    def failing(self: Store, *args: Any, **kwargs: Any) -> list[JobRecord]:
        real(self, *args, **kwargs)
        raise RuntimeError("disk full")

    monkeypatch.setattr(Store, "_insert_tasks", failing)
    with pytest.raises(RuntimeError):
        store.submit_array(spec(array="0-4"), list(range(5)), "team-a", 1.0)
    with store.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one() == 0
    assert store.events() == []


def test_cancel_array_asks_every_live_task_once(store: Store) -> None:
    tasks, _ = store.submit_array(spec(array="0-3"), [0, 1, 2, 3], "team-a", 1.0)
    done = tasks[0].job.model_copy(update={"state": JobState.SUCCEEDED, "exit_code": 0})
    store.apply(Batch(updates=[JobRecord(job=done)]))
    store.request_cancel(tasks[1].id, None, 1.5)
    after = store.request_cancel_array(tasks[0].job.array_id or "", 5.0, 2.0, actor="team-a (token 1)")
    assert [t.cancel_requested_at for t in after] == [None, 1.5, 2.0, 2.0]
    assert [t.cancel_grace_s for t in after[2:]] == [5.0, 5.0]
    assert [e.kind for e in store.events(tasks[3].id)] == ["SUBMITTED", "CANCEL_REQUESTED"]
    audited = [a for a in store.audit() if a.decision == "cancel-request"]
    assert [a.job_id for a in audited] == [tasks[1].id, tasks[2].id, tasks[3].id]
    assert audited[-1].actor == "team-a (token 1)"
    # Again: nothing new is asked.
    assert store.request_cancel_array(tasks[0].id, None, 3.0) == after


@pytest.mark.parametrize("array_id", ["999", "x"])
def test_cancel_of_no_array_raises(store: Store, array_id: str) -> None:
    store.submit(spec(), "team-a", 1.0)
    with pytest.raises(JobNotFound):
        store.request_cancel_array(array_id, None, 1.0)
    assert store.array_tasks(array_id) == []


def test_a_large_array_is_one_transaction(store: Store) -> None:
    indices = list(range(2000))
    tasks, _ = store.submit_array(spec(array="0-1999"), indices, "team-a", 1.0)
    assert [t.job.array_index for t in tasks] == indices
    assert len({t.id for t in tasks}) == 2000
    assert store.array_tasks(tasks[0].id) == tasks
    assert len(store.events(limit=None)) == 2000
    seen, _ = store.changed_since(0)
    assert len(seen) == 2000  # each its own change_seq
    counter = store.change_counter()
    after = store.request_cancel_array(tasks[0].id, None, 2.0)
    assert all(t.cancel_requested_at == 2.0 for t in after)
    changed, _ = store.changed_since(counter)
    assert len(changed) == 2000  # the controller sees every task's cancel request
