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
