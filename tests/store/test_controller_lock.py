"""One controller per store, and a dead controller never blocks its successor (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from scheduler.store.controller_lock import ControllerLock, ControllerLockHeld
from scheduler.store.store import Store


def test_a_second_controller_is_refused_until_the_first_releases(store: Store, db_url: str) -> None:
    first = ControllerLock.acquire(store)
    other = Store.open(db_url)  # as a second process would open it
    try:
        with pytest.raises(ControllerLockHeld, match="another controller"):
            ControllerLock.acquire(other)
        first.release()
        ControllerLock.acquire(other).release()
    finally:
        other.close()


def test_a_killed_controller_leaves_the_lock_free(store: Store, db_url: str) -> None:
    code = (
        "import sys, time; from scheduler.store.store import Store;"
        "from scheduler.store.controller_lock import ControllerLock;"
        f"lock = ControllerLock.acquire(Store.open({db_url!r})); print('held', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        with pytest.raises(ControllerLockHeld):
            ControllerLock.acquire(store)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    for _ in range(50):  # PostgreSQL notices the dropped connection within moments
        try:
            ControllerLock.acquire(store).release()
            return
        except ControllerLockHeld:
            time.sleep(0.1)
    raise AssertionError("the lock of a killed controller was never released")


def _terminate_lock_session(store: Store) -> None:
    """What a restarted server or a cut network does to the lock's session: it ends."""
    with store.engine.connect() as connection:
        connection.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        )
        connection.commit()


def test_a_lost_postgresql_lock_is_taken_again_when_nobody_else_has_it(postgres_server: object) -> None:
    from scheduler.store.local_postgres import LocalPostgres

    assert isinstance(postgres_server, LocalPostgres)
    store = Store.open(postgres_server.create_database("t_lock_again"))
    try:
        lock = ControllerLock.acquire(store)
        lock.check()  # held: nothing to do
        _terminate_lock_session(store)
        lock.check()  # the session died, nobody else took it: taken again on a new connection
        with pytest.raises(ControllerLockHeld):
            ControllerLock.acquire(store)
        lock.release()
    finally:
        store.close()


def test_a_lost_postgresql_lock_taken_by_another_controller_stops_the_writer(postgres_server: object) -> None:
    from scheduler.store.errors import LockLost
    from scheduler.store.local_postgres import LocalPostgres

    assert isinstance(postgres_server, LocalPostgres)
    url = postgres_server.create_database("t_lock_lost")
    store, other = Store.open(url), Store.open(url)
    try:
        lock = ControllerLock.acquire(store)
        _terminate_lock_session(store)
        successor = _acquire_within(other, 10.0)  # a second controller saw the lock free and took it
        with pytest.raises(LockLost, match="another controller holds it"):
            lock.check()
        successor.release()
        lock.release()
    finally:
        store.close()
        other.close()


def _acquire_within(store: Store, seconds: float) -> ControllerLock:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return ControllerLock.acquire(store)
        except ControllerLockHeld:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
