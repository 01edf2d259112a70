"""Engines for the two databases, and the one way to open a write transaction on either.

SQLite: WAL (readers never block the writer), synchronous=NORMAL (a commit survives a process crash,
not a power loss), a 10 s busy timeout, foreign keys on. pysqlite's own transaction handling is turned
off so that write transactions can start with BEGIN IMMEDIATE: a deferred transaction that later wants
to write fails at once with "database is locked" when another process wrote in between, whereas
IMMEDIATE takes the write lock up front and waits for it (busy_timeout).

PostgreSQL: psycopg 3, READ COMMITTED, pre-ping. Writes that need a global order take an advisory
transaction lock (see `lock`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

_WRITE = "corral_write"  # execution option: this connection's next transaction writes
BUSY_TIMEOUT_S = 10.0

# pg_advisory_xact_lock keys.
CHANGE_LOCK = 0x636F7272616C01  # orders jobs.change_seq values by commit (Store.changed_since)
MIGRATE_LOCK = 0x636F7272616C02  # one schema upgrade at a time
AUDIT_LOCK = 0x636F7272616C03  # appends to the audit hash chain, one transaction at a time (taken last)


def normalize_url(url: str | URL) -> URL:
    """postgresql:// and postgres:// mean psycopg 3; everything else is taken as given."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create(url: str | URL) -> Engine:
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite(parsed)
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(parsed, pool_pre_ping=True, pool_size=8, max_overflow=16)
    raise ValueError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql")


def _sqlite(url: URL) -> Engine:
    memory = url.database in (None, "", ":memory:")
    # An in-memory database lives in one connection: share it (tests and demos only).
    extra: dict[str, Any] = {"poolclass": StaticPool} if memory else {}
    engine = sa.create_engine(
        url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}, **extra
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # autocommit at the driver: we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


# SQLite has one writer at a time. Threads of one process queue on a lock instead of in SQLite's busy
# handler, which sleeps in steps of up to 100 ms and wastes most of the time under concurrent
# submissions; other processes still wait through busy_timeout.
_SQLITE_WRITERS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


def _writer_lock(engine: Engine) -> threading.Lock | None:
    if engine.dialect.name != "sqlite":
        return None
    with _REGISTRY_LOCK:
        return _SQLITE_WRITERS.setdefault(engine, threading.Lock())


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A write transaction: committed when the block ends, rolled back if it raises."""
    lock = _writer_lock(engine)
    with lock if lock is not None else nullcontext(), engine.connect() as connection:
        connection = connection.execution_options(**{_WRITE: True})
        with connection.begin():
            yield connection


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction (one snapshot on SQLite; READ COMMITTED statements on PostgreSQL)."""
    with engine.connect() as connection:
        yield connection


def lock(connection: Connection, key: int) -> None:
    """Serialize this transaction with every other one taking `key`, until it commits (PostgreSQL only;
    SQLite's BEGIN IMMEDIATE already serializes all writers)."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
