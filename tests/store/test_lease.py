"""The controller lease: one holder at a time, a new epoch at every takeover, and a fence that
refuses a deposed leader's writes inside its own transaction (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from scheduler.model.queue import DEFAULT_PRIORITY_CLASSES
from scheduler.model.records import Batch, EventRecord
from scheduler.store import engine as engines
from scheduler.store.errors import LockLost
from scheduler.store.lease import Lease, current_lease, db_now
from scheduler.store.store import Store
from scheduler.store.view_store import publish_view, read_view
from scheduler.view import empty_view
from tests.store.helpers import spec


def _other(db_url: str) -> Store:
    return Store.open(db_url)


def test_one_holder_at_a_time_and_a_new_epoch_at_each_takeover(store: Store, db_url: str) -> None:
    other_store = _other(db_url)
    try:
        # 3 s, not 1: a loaded CI machine once spent over a second between
        # acquiring and reading the lease back, and the lease had expired.
        a = Lease(store, duration_s=3.0, api_url="http://a")
        b = Lease(other_store, duration_s=3.0, api_url="http://b")
        assert a.try_acquire() and a.epoch == 1 and a.leading
        assert not b.try_acquire() and b.epoch == 0  # held and not expired
        info = current_lease(store)
        assert info is not None and (info.holder, info.epoch, info.api_url) == (a.holder, 1, "http://a")
        assert 0 < info.expires_in_s <= 3.0
        a.renew()
        assert a.try_acquire() and a.epoch == 1  # its own lease: renewed, same epoch
        time.sleep(3.1)  # a stops renewing (dead, paused, cut off): the lease expires
        assert not a.leading  # its local deadline passed before the store's expiry
        with pytest.raises(LockLost, match="not renewed within"):
            a.check()
        assert b.try_acquire() and b.epoch == 2
        with pytest.raises(LockLost, match="another controller took the lease"):
            a.renew()
        assert a.epoch == 0
    finally:
        other_store.close()


def test_the_fence_refuses_a_deposed_leaders_write_in_its_own_transaction(store: Store, db_url: str) -> None:
    other_store = _other(db_url)
    try:
        old = Lease(store, duration_s=2.0)
        assert old.try_acquire()
        job, _ = store.submit(spec(), "t", 1.0)
        event = EventRecord(job.id, 2.0, "NOTE", "by the old leader")
        store.apply(Batch(events=[event]), fence=old.verify)  # while it leads: written
        time.sleep(2.1)
        new = Lease(other_store, duration_s=5.0)
        assert new.try_acquire() and new.epoch == old.epoch + 1
        late = EventRecord(job.id, 3.0, "NOTE", "by the deposed leader")
        with pytest.raises(LockLost, match=r"fenced: the store's lease epoch is 2, this controller's 1"):
            store.apply(Batch(events=[late]), fence=old.verify)
        assert [e.message for e in store.events(job.id) if e.kind == "NOTE"] == ["by the old leader"]
        with pytest.raises(LockLost):
            publish_view(store, empty_view(DEFAULT_PRIORITY_CLASSES, 4.0), old.epoch, old.verify)
        publish_view(other_store, empty_view(DEFAULT_PRIORITY_CLASSES, 5.0), new.epoch, new.verify)
        published = read_view(store)
        assert published is not None and (published.epoch, published.view.time) == (2, 5.0)
    finally:
        other_store.close()


def test_release_hands_over_at_once(store: Store, db_url: str) -> None:
    other_store = _other(db_url)
    try:
        a, b = Lease(store, duration_s=60.0), Lease(other_store, duration_s=60.0)
        assert a.try_acquire() and not b.try_acquire()
        a.release()
        assert b.try_acquire() and b.epoch == 2 and a.epoch == 0
    finally:
        other_store.close()


def test_candidates_racing_for_a_free_lease_elect_exactly_one(db_url: str) -> None:
    stores = [Store.open(db_url) for _ in range(4)]
    try:
        leases = [Lease(s, duration_s=30.0) for s in stores]
        barrier, won = threading.Barrier(len(leases)), []

        def race(lease: Lease) -> None:
            barrier.wait()
            if lease.try_acquire():
                won.append(lease)

        threads = [threading.Thread(target=race, args=(lease,)) for lease in leases]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(won) == 1 and won[0].epoch == 1
    finally:
        for s in stores:
            s.close()


def test_expiry_runs_on_the_database_clock(store: Store) -> None:
    with engines.read(store.engine) as connection:
        assert abs(db_now(connection) - time.time()) < 5  # same machine here: the clocks agree


# PostgreSQL only: on SQLite a paused writer holds the whole store's write lock (README, known limits).
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_leader_paused_inside_its_transaction_does_not_block_the_takeover(
    store: Store, db_url: str
) -> None:
    """Found by the chaos soak: a leader SIGSTOPped in the middle of a controller transaction kept
    its lock on the lease row (the fence reads it FOR SHARE), and the follower's takeover waited on
    that lock for as long as the pause lasted. Now the database ends a lease holder's transaction
    that sits idle past the lease, and a candidate gives up waiting for the row after the lease."""
    other_store = _other(db_url)
    try:
        old = Lease(store, duration_s=1.0)
        assert old.try_acquire()
        new = Lease(other_store, duration_s=1.0)
        took: list[float] = []

        def candidate() -> None:
            started = time.monotonic()
            while time.monotonic() - started < 20 and not new.try_acquire():
                time.sleep(0.2)
            if new.epoch:
                took.append(time.monotonic() - started)

        with (
            pytest.raises(sa.exc.DBAPIError, match="idle-in-transaction"),
            engines.write(store.engine) as connection,
        ):
            old.verify(connection)  # the fence: the lease row locked FOR SHARE
            thread = threading.Thread(target=candidate, daemon=True)
            thread.start()
            thread.join(25)  # "paused": this transaction does nothing meanwhile
            assert took, "the follower never took the lease while the leader was paused"
            assert took[0] < 5.0  # lease expiry (1 s) + the idle limit (1 s) + slack
            # The paused leader wakes up: its session is gone, its write cannot commit.
            connection.execute(sa.text("SELECT 1"))
        assert new.epoch == old.epoch + 1
        info = current_lease(store)
        assert info is not None and info.holder == new.holder
    finally:
        other_store.close()
