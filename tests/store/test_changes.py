"""changed_since: what the controller polls each cycle. It must never miss a submission or a cancel."""

from __future__ import annotations

import threading

from scheduler.model.job import JobState
from scheduler.model.records import Batch, JobRecord
from scheduler.store.store import Store
from tests.store.helpers import spec


def test_submissions_and_cancels_show_up_but_applies_do_not(store: Store) -> None:
    a, _ = store.submit(spec(name="a"), "team-a", 1.0)
    b, _ = store.submit(spec(name="b"), "team-a", 1.0)
    changed, seq = store.changed_since(0)
    assert [r.id for r in changed] == [a.id, b.id]
    assert store.changed_since(seq) == ([], seq)

    store.apply(Batch(updates=[JobRecord(job=a.job.model_copy(update={"state": JobState.STARTING}))]))
    assert store.changed_since(seq) == ([], seq)

    store.request_cancel(a.id, None, 2.0)
    changed, newer = store.changed_since(seq)
    assert [r.id for r in changed] == [a.id] and changed[0].cancel_requested_at == 2.0
    assert newer > seq == 2
    assert store.change_counter() == newer


def test_nothing_is_missed_under_concurrent_writers(store: Store) -> None:
    """A missed row is one whose change_seq is at or below a counter already returned: no later poll
    can return it. So polling while writers run, plus one last poll, must see every write."""
    writers, per_writer = 4, 40
    done = threading.Event()
    seen: set[str] = set()
    seen_cancelled: set[str] = set()
    submitted: list[str] = []
    cancelled: list[str] = []
    polls = 0

    def write(w: int) -> None:
        for i in range(per_writer):
            record, _ = store.submit(spec(name=f"w{w}-{i}"), "team-a", float(i))
            submitted.append(record.id)
            if i % 4 == 0:
                store.request_cancel(record.id, None, float(i))
                cancelled.append(record.id)

    def poll(seq: int) -> int:
        nonlocal polls
        changed, newer = store.changed_since(seq)
        assert newer >= seq
        polls += 1
        for record in changed:
            seen.add(record.id)
            if record.cancel_requested_at is not None:
                seen_cancelled.add(record.id)
        return newer

    def read() -> None:
        seq = 0
        while not done.is_set():
            seq = poll(seq)
        poll(seq)

    reader = threading.Thread(target=read)
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    done.set()
    reader.join(60)
    assert len(submitted) == writers * per_writer
    assert seen == set(submitted)
    assert seen_cancelled == set(cancelled)
    assert polls > 10  # the reader really ran alongside the writers
