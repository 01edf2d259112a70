"""Appending to the audit hash chain, reading it back, checking it, and the denied-request writer.

Order. A chain must not fork: two transactions may never both append after the same record. Every
append runs inside a write transaction and takes the audit lock there (PostgreSQL: the advisory
transaction lock AUDIT_LOCK, held until commit; SQLite: BEGIN IMMEDIATE already holds the database's
one write lock), then reads the last record (one indexed read: the primary key, descending) and
inserts the new rows with explicit seqs last + 1, last + 2, ... and their hashes, computed in memory.
The primary key on seq is the last line: a second append after the same record would fail, not fork.
Writers take the audit lock last in their transactions (after the lease check, job rows, the change
lock), so it is held only for the read and the insert, and no lock order can deadlock.

Denied requests (401/403) can come in floods (a client with a wrong token in a loop). They go
through `DeniedWriter`: a bounded queue drained by one thread that writes up to MAX_BATCH records per
transaction and at most one transaction per MIN_INTERVAL_S. So however many requests are denied, the
store sees at most ~10 small transactions a second from them and the API never waits on the store
for a denial; what does not fit the queue is dropped and counted (`corral_audit_dropped_total`), and
the next batch written records how many were dropped (decision `denied-dropped`), so the chain itself
says where denials are missing. Chosen over a per-token rate limit because a flood of 401s has no
token to limit by (any string is a new "token"), and over writing in the request because that puts
the store's write lock on the path of every bad request.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from scheduler.model.audit_chain import GENESIS, ChainEntry, ChainVerifier, canonical, digest_of, link
from scheduler.model.records import AuditRecord
from scheduler.store import codec
from scheduler.store import engine as engines
from scheduler.store.schema import audit

__all__ = [
    "DeniedWriter",
    "append",
    "entries",
    "entry_of",
    "first_seq_since",
    "head",
    "verify",
]

log = logging.getLogger("corral.store")

_LAST = sa.select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)
_INSERT = sa.insert(audit)
PAGE = 5000  # rows per query when walking the whole chain


def append(connection: Connection, records: Sequence[AuditRecord]) -> tuple[int, str]:
    """Chain `records` after the last one, inside the caller's write transaction; the new head."""
    engines.lock(connection, engines.AUDIT_LOCK)
    last = connection.execute(_LAST).first()
    seq, prev = (int(last.seq), str(last.hash)) if last is not None else (0, GENESIS)
    rows: list[dict[str, Any]] = []
    for record in records:
        seq += 1
        new = link(prev, digest_of(canonical(record, seq)))
        rows.append({**codec.audit_columns(record), "seq": seq, "prev_hash": prev, "hash": new})
        prev = new
    if rows:
        connection.execute(_INSERT, rows)
    return seq, prev


def entry_of(row: RowMapping) -> ChainEntry:
    """A stored row as a chain entry: its canonical content recomputed from its columns (so an edit of
    any column shows as a hash that no longer matches)."""
    seq = int(row["seq"])
    return ChainEntry(seq, row["prev_hash"], row["hash"], canonical(codec.audit_record(row), seq))


def head(connection: Connection) -> tuple[int, str] | None:
    """(seq, hash) of the last record, or None for an empty chain."""
    last = connection.execute(_LAST).first()
    return None if last is None else (int(last.seq), str(last.hash))


def entries(connection: Connection, after_seq: int = 0, limit: int | None = PAGE) -> list[ChainEntry]:
    query = sa.select(audit).where(audit.c.seq > after_seq).order_by(audit.c.seq).limit(limit)
    return [entry_of(row) for row in connection.execute(query).mappings()]


def first_seq_since(connection: Connection, since: float) -> int | None:
    """The first seq whose time is at or after `since` (None: none is)."""
    found = connection.execute(sa.select(sa.func.min(audit.c.seq)).where(audit.c.time >= since)).scalar()
    return None if found is None else int(found)


def walk(engine: Engine, after_seq: int = 0) -> Iterator[ChainEntry]:
    """Every record after `after_seq` in seq order, a page per query."""
    while True:
        with engines.read(engine) as connection:
            page = entries(connection, after_seq, PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after_seq = page[-1].seq


def verify(engine: Engine, expected_head: tuple[int, str] | None = None) -> ChainVerifier:
    """Walk the whole chain in the database; ChainError naming the first bad record."""
    verifier = ChainVerifier(expected_head)
    for entry in walk(engine):
        verifier.add(entry)
    verifier.finish()
    return verifier


class DeniedWriter:
    """Denied requests → the audit chain, in batches, from a bounded queue (see the module's doc)."""

    MAX_QUEUE = 10_000
    MAX_BATCH = 500
    MIN_INTERVAL_S = 0.1

    def __init__(
        self,
        engine: Engine,
        *,
        max_queue: int = MAX_QUEUE,
        max_batch: int = MAX_BATCH,
        min_interval_s: float = MIN_INTERVAL_S,
    ) -> None:
        self._engine = engine
        self._queue: queue.Queue[AuditRecord | None] = queue.Queue(max_queue)
        self._max_batch = max_batch
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.dropped = 0  # total, for corral_audit_dropped_total
        self._unrecorded = 0  # dropped since the last batch written (recorded in the next one)
        self.written = 0
        self._last_time = 0.0

    def put(self, record: AuditRecord) -> bool:
        """Queue a denial for the chain; False (and counted) when the queue is full or closed."""
        with self._lock:
            self._last_time = record.time
            if self._closed:
                return False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="corral-audit-denied", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(record)
            return True
        except queue.Full:
            with self._lock:
                self.dropped += 1
                self._unrecorded += 1
            return False

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)  # may wait for room: the thread is draining
            thread.join(timeout)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until what was queued so far is written (tests)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            batch: list[AuditRecord] = []
            taken = 1
            if first is None:
                stop = True
            else:
                batch.append(first)
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                taken += 1
                if item is None:
                    stop = True
                else:
                    batch.append(item)
            self._write(batch)
            for _ in range(taken):
                self._queue.task_done()
            if not stop:
                time.sleep(self._min_interval_s)

    def _write(self, batch: list[AuditRecord]) -> None:
        with self._lock:
            unrecorded, self._unrecorded = self._unrecorded, 0
        if unrecorded:
            batch.append(
                AuditRecord(
                    batch[-1].time if batch else self._last_time,
                    "",
                    "denied-dropped",
                    detail=f"{unrecorded} denied requests were not recorded: the audit queue was full",
                    actor="api",
                )
            )
        if not batch:
            return
        try:
            with engines.write(self._engine) as connection:
                append(connection, batch)
            self.written += len(batch)
        except Exception:
            log.warning("could not record %d denied requests in the audit log", len(batch), exc_info=True)
            lost = len(batch) - (1 if unrecorded else 0)
            with self._lock:
                self.dropped += lost
                self._unrecorded += lost + unrecorded
