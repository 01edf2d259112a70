"""One active controller per store: two would both place the same job and start it twice.

SQLite: an exclusive flock on `<database>.controller.lock` (the kernel drops it when the process
dies, so a `kill -9`ed controller never blocks its successor). PostgreSQL: a session-level advisory
lock held on a dedicated connection (dropped when that connection closes or its process dies).
A fencing lease for replicated controllers is the Helm chart's business; this lock keeps a second
`corral serve` on the same store from ever running.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import IO

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scheduler.store.errors import LockLost
from scheduler.store.store import Store

_PG_KEY = 0x636F7272616C03
_RETAKE_TRIES = 10  # over about 2 s
_RETAKE_PAUSE_S = 0.2


class ControllerLockHeld(RuntimeError):
    pass


class ControllerLock:
    """Held for the controller's lifetime; `check()` before every write (the controller's Fence)."""

    def __init__(
        self, file: IO[bytes] | None, connection: Connection | None, store: Store | None = None
    ) -> None:
        self._file = file
        self._connection = connection
        self._store = store

    @classmethod
    def acquire(cls, store: Store) -> ControllerLock:
        """Take the lock or raise ControllerLockHeld at once (never wait: a second one is a mistake)."""
        held = ControllerLockHeld(f"another controller is already running on {store.url_for_humans}")
        if store.dialect == "sqlite":
            database = store.engine.url.database
            if not database or database == ":memory:":
                return cls(None, None)  # a private in-memory store: nobody else can see it
            path = Path(database).with_name(Path(database).name + ".controller.lock")
            file = open(path, "ab")  # noqa: SIM115 (held open for the lock's lifetime)
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                file.close()
                raise held from None
            file.truncate(0)
            file.write(f"{os.getpid()}\n".encode())
            file.flush()
            return cls(file, None)
        connection = _try_pg_lock(store)
        if connection is None:
            raise held
        return cls(None, connection, store)

    def check(self) -> None:
        """Raise LockLost unless the lock is still ours. A PostgreSQL session lock lives as long as
        its connection: if that connection died (a restarted server, a cut network), take the lock
        again on a new one if nobody else holds it; otherwise another controller may be deciding
        now, and this one must not write."""
        if self._connection is None or self._store is None:
            return  # SQLite: the flock holds while this process keeps the file open
        try:
            self._connection.execute(sa.text("SELECT 1")).scalar_one()
            self._connection.commit()
            return
        except sa.exc.SQLAlchemyError as exc:
            cause = " ".join(str(exc).split())[:200]
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            self._connection.invalidate()
            self._connection.close()
        self._connection = None
        again: Connection | None = None
        for attempt in range(_RETAKE_TRIES):  # the dead session's lock goes when its backend exits
            if attempt:
                time.sleep(_RETAKE_PAUSE_S)
            try:
                again = _try_pg_lock(self._store)
            except sa.exc.SQLAlchemyError as exc:
                raise LockLost(
                    f"its connection failed ({cause}) and the database cannot be reached: {exc}"
                ) from None
            if again is not None:
                break
        if again is None:
            raise LockLost(f"its connection failed ({cause}) and another controller holds it now")
        self._connection = again

    def release(self) -> None:
        """Give the lock up (on shutdown); safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._connection is not None:
            # A pooled connection outlives close(): unlock explicitly, and drop the session too.
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_KEY})
                self._connection.invalidate()
            self._connection.close()
            self._connection = None


def _try_pg_lock(store: Store) -> Connection | None:
    """A new connection holding the session advisory lock, or None if another session holds it."""
    connection = store.engine.connect()
    try:
        got = connection.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_KEY}).scalar()
        connection.commit()
    except BaseException:
        connection.close()
        raise
    if not got:
        connection.close()
        return None
    return connection
