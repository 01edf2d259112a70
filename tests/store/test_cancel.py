"""request_cancel writes only cancel_* columns; apply writes only the controller's: neither clobbers."""

from __future__ import annotations

import threading

import pytest

from scheduler.model.job import JobState
from scheduler.model.records import Batch, JobRecord
from scheduler.store.errors import JobNotFound
from scheduler.store.store import Store
from tests.store.helpers import allocation, running, spec


def test_request_cancel_is_recorded_once(store: Store) -> None:
    job, _ = store.submit(spec(), "team-a", 1.0)
    first = store.request_cancel(job.id, 5.0, 2.0)
    assert (first.cancel_requested_at, first.cancel_grace_s) == (2.0, 5.0)
    again = store.request_cancel(job.id, None, 3.0)
    assert again == first
    assert [e.kind for e in store.events(job.id)] == ["SUBMITTED", "CANCEL_REQUESTED"]


def test_a_finished_job_cannot_be_cancelled(store: Store) -> None:
    job, _ = store.submit(spec(), "team-a", 1.0)
    done = JobRecord(job=job.job.model_copy(update={"state": JobState.SUCCEEDED, "exit_code": 0}))
    store.apply(Batch(updates=[done]))
    assert store.request_cancel(job.id, None, 2.0).cancel_requested_at is None


@pytest.mark.parametrize("job_id", ["42", "abc", ""])
def test_cancelling_an_unknown_job_raises(store: Store, job_id: str) -> None:
    with pytest.raises(JobNotFound) as caught:
        store.request_cancel(job_id, None, 1.0)
    assert str(caught.value) == f"job {job_id} not found"


def test_a_stale_controller_record_keeps_the_cancel_request(store: Store) -> None:
    job, _ = store.submit(spec(), "team-a", 1.0)
    store.request_cancel(job.id, 1.0, 2.0)
    store.apply(Batch(updates=[running(job, allocation(("n1", (0,))))]))  # built before the cancel
    after = store.get(job.id)
    assert after is not None and after.cancel_requested_at == 2.0 and after.state is JobState.RUNNING


def test_concurrent_cancel_and_apply_keep_both_writes(store: Store) -> None:
    jobs = [store.submit(spec(name=f"j{i}"), "team-a", 1.0)[0] for i in range(10)]
    steps = 40
    go = threading.Barrier(2)

    def controller() -> None:
        go.wait()
        for s in range(steps):
            updates = [
                JobRecord(job=j.job.model_copy(update={"attained_gpu_s": float(s)}), updated_at=float(s))
                for j in jobs
            ]
            store.apply(Batch(updates=updates))

    def api() -> None:
        go.wait()
        for j in jobs:
            store.request_cancel(j.id, 3.0, 9.0)

    threads = [threading.Thread(target=controller), threading.Thread(target=api)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for j in jobs:
        after = store.get(j.id)
        assert after is not None
        assert (after.cancel_requested_at, after.cancel_grace_s) == (9.0, 3.0)
        assert after.job.attained_gpu_s == steps - 1
