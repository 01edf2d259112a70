"""The store API: the API writes submissions and cancel requests, the controller writes everything else.

Ownership of columns keeps the two writers from clobbering each other: `submit` inserts, `request_cancel`
writes only cancel_* (and change_seq), `apply` writes only the controller's columns. Each call is one
transaction.

`changed_since` never misses a row: change_seq values are handed out in commit order. On SQLite every
write transaction holds the database's write lock from BEGIN IMMEDIATE to COMMIT and takes max + 1; on
PostgreSQL `submit` and `request_cancel` take a transaction-level advisory lock before nextval, and
PostgreSQL releases that lock only after the commit is visible. So whenever a reader sees value v, every
value below v is already committed and visible in the same snapshot: the rows above the counter a reader
last returned are exactly the ones it has not seen.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from scheduler.model.audit_chain import ChainEntry, canonical_json
from scheduler.model.job import TERMINAL_STATES, Job, JobSpec, JobState, PendingCode
from scheduler.model.queue import Queue
from scheduler.model.records import AuditRecord, Batch, EventRecord, JobRecord
from scheduler.store import audit_log, codec, migrate
from scheduler.store import engine as engines
from scheduler.store.apply import GpuTaken, apply_batch, conflict
from scheduler.store.errors import AllocationConflict, IdempotencyConflict, JobNotFound, StoreError
from scheduler.store.schema import CHANGE_SEQ, allocations, audit, events, jobs, queues

__all__ = [
    "AllocationConflict",
    "IdempotencyConflict",
    "JobNotFound",
    "Store",
    "StoreError",
]

_TERMINAL = [s.value for s in TERMINAL_STATES]
# Called first inside a controller's write transaction; raises (LockLost) to refuse the write.
Fence = Callable[[Connection], None]
_SUBMIT_RETRIES = 3
_INSERT_EVENT = sa.insert(events)
_MAX_ID = 2**63 - 1


class Store:
    def __init__(self, engine: Engine) -> None:
        """Use Store.open(url): it also brings the schema to head."""
        self._engine = engine
        self._dialect = engine.dialect.name
        self._denied: audit_log.DeniedWriter | None = None
        self._denied_lock = threading.Lock()
        # Built once: building and cache-keying statements per call was most of submit()'s time.
        next_seq = _next_change_seq(self._dialect)
        self._insert_job = sa.insert(jobs).values(change_seq=next_seq)
        self._request_cancel = (
            sa.update(jobs)
            .where(
                jobs.c.id == sa.bindparam("b_id"),
                jobs.c.cancel_requested_at.is_(None),
                jobs.c.state.not_in(_TERMINAL),
            )
            .values(change_seq=next_seq)
        )
        # A task of an array already found live under the write lock (executemany: no IN list).
        self._request_cancel_task = (
            sa.update(jobs).where(jobs.c.id == sa.bindparam("b_id")).values(change_seq=next_seq)
        )

    @classmethod
    def open(cls, url: str) -> Store:
        engine = engines.create(url)
        try:
            migrate.upgrade(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    def close(self) -> None:
        if self._denied is not None:
            self._denied.close()
        self._engine.dispose()

    @property
    def url(self) -> str:
        return self._engine.url.render_as_string(hide_password=False)

    @property
    def url_for_humans(self) -> str:
        """The URL without its password (for messages and logs)."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self._dialect

    @property
    def engine(self) -> Engine:
        return self._engine

    # --- configuration ---------------------------------------------------------------------------

    def sync_queues(
        self,
        new: Sequence[Queue],
        fence: Fence | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        now: float = 0.0,
    ) -> bool:
        """Store the queues; with `config` (queues, priority classes, policy as JSON), also audit it
        when it differs from the config last audited (decision `config`: its sha256 in the detail,
        the document itself in the private detail). True if a config change was audited."""
        with engines.write(self._engine) as connection:
            if fence is not None:
                fence(connection)
            connection.execute(sa.delete(queues))
            if new:
                rows = [
                    {"name": queue.name, "position": i, "spec": queue.model_dump(mode="json")}
                    for i, queue in enumerate(new)
                ]
                connection.execute(sa.insert(queues), rows)
            if config is None:
                return False
            record = _config_change(connection, config, now)
            if record is not None:
                audit_log.append(connection, [record])
            return record is not None

    def queues(self) -> list[Queue]:
        with engines.read(self._engine) as connection:
            rows = connection.execute(sa.select(queues.c.spec).order_by(queues.c.position))
            return [Queue.model_validate(spec) for (spec,) in rows]

    # --- API side --------------------------------------------------------------------------------

    def submit(self, spec: JobSpec, team: str, now: float) -> tuple[JobRecord, bool]:
        """Insert a PENDING job and its SUBMITTED event; (job, True), or (the existing job, False) for a
        repeated idempotency key with an equal spec."""
        for attempt in range(_SUBMIT_RETRIES):
            try:
                with engines.write(self._engine) as connection:
                    engines.lock(connection, engines.CHANGE_LOCK)
                    if spec.idempotency_key is not None:
                        existing = self._by_key(connection, team, spec.idempotency_key)
                        if existing is not None:
                            return _same_spec(existing, spec, team), False
                    return self._insert(connection, spec, team, now), True
            except IntegrityError:
                # Only a concurrent submission with the same key can get here (the lock makes it
                # impossible on PostgreSQL and BEGIN IMMEDIATE on SQLite; kept as the last line).
                if spec.idempotency_key is None or attempt == _SUBMIT_RETRIES - 1:
                    raise
        raise StoreError("unreachable")  # pragma: no cover

    def submit_many(
        self, requests: Sequence[tuple[JobSpec, str, float]]
    ) -> list[tuple[JobRecord, bool] | IdempotencyConflict]:
        """Several submissions in ONE transaction (group commit): each result is what submit() would
        have returned for it, or the IdempotencyConflict it would have raised. Any other error fails
        the whole batch and writes nothing (the caller may then submit one by one)."""
        results: list[tuple[JobRecord, bool] | IdempotencyConflict] = []
        with engines.write(self._engine) as connection:
            engines.lock(connection, engines.CHANGE_LOCK)
            for spec, team, now in requests:
                if spec.idempotency_key is not None:
                    existing = self._by_key(connection, team, spec.idempotency_key)
                    if existing is not None:
                        try:
                            results.append((_same_spec(existing, spec, team), False))
                        except IdempotencyConflict as conflict:
                            results.append(conflict)
                        continue
                results.append((self._insert(connection, spec, team, now), True))
        return results

    def _insert(
        self,
        connection: Connection,
        spec: JobSpec,
        team: str,
        now: float,
        array: tuple[int | None, int] | None = None,
    ) -> JobRecord:
        """Insert one PENDING job; `array` = (array id, index) for a task of an array (the first task
        is inserted with no array id: it gets its own id, as the array's, right after)."""
        reason = PendingCode.WAITING_FOR_SCHEDULING.value
        array_id, array_index = array if array is not None else (None, None)
        # Only an array's first task carries the idempotency key: the key names the whole array.
        key = spec.idempotency_key if array_id is None else None
        values: dict[str, Any] = {
            "team": team,
            "queue": spec.queue,
            "name": spec.name,
            "state": JobState.PENDING.value,
            "priority": spec.priority,
            "spec": spec.model_dump(mode="json"),
            "submitted_at": now,
            "restart_count": 0,
            "preemption_count": 0,
            "attained_gpu_s": 0.0,
            "pending_reason": reason,
            "idempotency_key": key,
            "updated_at": now,
            "array_id": array_id,
            "array_index": array_index,
        }
        inserted = connection.execute(self._insert_job, values).inserted_primary_key
        assert inserted is not None
        job_id = str(inserted[0])
        message = f"queue {spec.queue}"
        if array is not None:
            message += f", task {array_index} of array {array_id if array_id is not None else job_id}"
        event = EventRecord(job_id=job_id, time=now, kind="SUBMITTED", message=message)
        connection.execute(_INSERT_EVENT, codec.event_columns(event))
        job = Job(
            id=job_id,
            spec=spec,
            team=team,
            state=JobState.PENDING,
            submitted_at=now,
            array_id=None if array is None else str(array_id if array_id is not None else job_id),
            array_index=array_index,
        )
        return JobRecord(job=job, pending_reason=reason, updated_at=now)

    def submit_array(
        self, spec: JobSpec, indices: Sequence[int], team: str, now: float
    ) -> tuple[list[JobRecord], bool]:
        """Insert one PENDING task per index, all in ONE transaction (all or none); the array's id is
        its first task's id. (tasks in index order, True), or (the existing tasks, False) for a
        repeated idempotency key with an equal spec (IdempotencyConflict for a different one)."""
        if not indices:
            raise ValueError("an array needs at least one index")
        for attempt in range(_SUBMIT_RETRIES):
            try:
                with engines.write(self._engine) as connection:
                    engines.lock(connection, engines.CHANGE_LOCK)
                    if spec.idempotency_key is not None:
                        existing = self._by_key(connection, team, spec.idempotency_key)
                        if existing is not None:
                            head = _same_spec(existing, spec, team)
                            if head.job.array_id is None:
                                return [head], False
                            return self._tasks(connection, head.job.array_id), False
                    first = self._insert(connection, spec, team, now, array=(None, indices[0]))
                    pk = int(first.id)
                    connection.execute(sa.update(jobs).where(jobs.c.id == pk).values(array_id=pk))
                    return [first, *self._insert_tasks(connection, spec, team, now, pk, indices[1:])], True
            except IntegrityError:
                if spec.idempotency_key is None or attempt == _SUBMIT_RETRIES - 1:
                    raise
        raise StoreError("unreachable")  # pragma: no cover

    def _insert_tasks(
        self,
        connection: Connection,
        spec: JobSpec,
        team: str,
        now: float,
        array_id: int,
        indices: Sequence[int],
    ) -> list[JobRecord]:
        """The tasks after the first: one executemany for the rows and one for their events (per-row
        statements cost ~1 ms each in SQLAlchemy, 10 s for a 10,000-task array)."""
        if not indices:
            return []
        reason = PendingCode.WAITING_FOR_SCHEDULING.value
        common: dict[str, Any] = {
            "team": team,
            "queue": spec.queue,
            "name": spec.name,
            "state": JobState.PENDING.value,
            "priority": spec.priority,
            "spec": spec.model_dump(mode="json"),
            "submitted_at": now,
            "restart_count": 0,
            "preemption_count": 0,
            "attained_gpu_s": 0.0,
            "pending_reason": reason,
            "idempotency_key": None,
            "updated_at": now,
            "array_id": array_id,
        }
        connection.execute(self._insert_job, [{**common, "array_index": i} for i in indices])
        query = (
            sa.select(jobs.c.id, jobs.c.array_index)
            .where(jobs.c.array_id == array_id, jobs.c.id != array_id)
            .order_by(jobs.c.array_index)
        )
        rows = [(str(job_id), int(index)) for job_id, index in connection.execute(query)]
        message = f"queue {spec.queue}, task {{}} of array {array_id}"
        events = [
            codec.event_columns(
                EventRecord(job_id=job_id, time=now, kind="SUBMITTED", message=message.format(index))
            )
            for job_id, index in rows
        ]
        connection.execute(_INSERT_EVENT, events)
        return [
            JobRecord(
                job=Job(
                    id=job_id,
                    spec=spec,
                    team=team,
                    state=JobState.PENDING,
                    submitted_at=now,
                    array_id=str(array_id),
                    array_index=index,
                ),
                pending_reason=reason,
                updated_at=now,
            )
            for job_id, index in rows
        ]

    def _tasks(self, connection: Connection, array_id: str) -> list[JobRecord]:
        query = sa.select(jobs).where(jobs.c.array_id == int(array_id)).order_by(jobs.c.array_index)
        return [codec.job_record(row) for row in connection.execute(query).mappings()]

    def array_tasks(self, array_id: str) -> list[JobRecord]:
        """Every task of the array, in index order ([] if there is no such array)."""
        pk = _pk(array_id)
        if pk is None:
            return []
        with engines.read(self._engine) as connection:
            return self._tasks(connection, str(pk))

    def request_cancel_array(
        self, array_id: str, grace_s: float | None, now: float, actor: str = "api"
    ) -> list[JobRecord]:
        """Record a cancel request for every live task of the array not yet asked to stop, in ONE
        transaction, each audited as `actor`'s; every task of the array afterwards, in index order."""
        pk = _pk(array_id)
        if pk is None:
            raise JobNotFound(array_id)
        message = "cancel requested" if grace_s is None else f"cancel requested, grace {grace_s:g} s"
        message += f" (array {pk})"
        with engines.write(self._engine) as connection:
            engines.lock(connection, engines.CHANGE_LOCK)
            live = (
                sa.select(jobs.c.id)
                .where(
                    jobs.c.array_id == pk,
                    jobs.c.cancel_requested_at.is_(None),
                    jobs.c.state.not_in(_TERMINAL),
                )
                .order_by(jobs.c.id)
            )
            ids = [int(i) for (i,) in connection.execute(live)]
            if ids:  # one executemany: each row still takes its own change_seq
                requests = [{"b_id": i, "cancel_requested_at": now, "cancel_grace_s": grace_s} for i in ids]
                connection.execute(self._request_cancel_task, requests)
                rows = [
                    codec.event_columns(
                        EventRecord(job_id=str(i), time=now, kind="CANCEL_REQUESTED", message=message)
                    )
                    for i in ids
                ]
                connection.execute(_INSERT_EVENT, rows)
            tasks = self._tasks(connection, str(pk))
            if not tasks:
                raise JobNotFound(array_id)
            asked = set(map(str, ids))
            entries = [
                AuditRecord(
                    now,
                    r.id,
                    "cancel-request",
                    r.job.restart_count,
                    nodes=r.allocation.node_ids if r.allocation is not None else (),
                    data_region=r.job.spec.data_region,
                    detail=message,
                    actor=actor,
                )
                for r in tasks
                if r.id in asked
            ]
            if entries:
                audit_log.append(connection, entries)
            return tasks

    def _by_key(self, connection: Connection, team: str, key: str) -> JobRecord | None:
        query = sa.select(jobs).where(jobs.c.team == team, jobs.c.idempotency_key == key)
        row = connection.execute(query).mappings().first()
        return None if row is None else codec.job_record(row)

    def request_cancel(self, job_id: str, grace_s: float | None, now: float, actor: str = "api") -> JobRecord:
        """Record a cancel request (once, and only for a live job), audited as `actor`'s; the
        controller carries it out."""
        pk = _pk(job_id)
        if pk is None:
            raise JobNotFound(job_id)
        with engines.write(self._engine) as connection:
            engines.lock(connection, engines.CHANGE_LOCK)
            request = {"b_id": pk, "cancel_requested_at": now, "cancel_grace_s": grace_s}
            requested = connection.execute(self._request_cancel, request).rowcount == 1
            message = "cancel requested" if grace_s is None else f"cancel requested, grace {grace_s:g} s"
            if requested:
                event = EventRecord(job_id=job_id, time=now, kind="CANCEL_REQUESTED", message=message)
                connection.execute(_INSERT_EVENT, codec.event_columns(event))
            row = connection.execute(sa.select(jobs).where(jobs.c.id == pk)).mappings().first()
            if row is None:
                raise JobNotFound(job_id)
            record = codec.job_record(row)
            if requested:
                entry = AuditRecord(
                    now,
                    job_id,
                    "cancel-request",
                    record.job.restart_count,
                    nodes=record.allocation.node_ids if record.allocation is not None else (),
                    data_region=record.job.spec.data_region,
                    detail=message,
                    actor=actor,
                )
                audit_log.append(connection, [entry])
            return record

    # --- reads -----------------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        pk = _pk(job_id)
        if pk is None:
            return None
        with engines.read(self._engine) as connection:
            row = connection.execute(sa.select(jobs).where(jobs.c.id == pk)).mappings().first()
            return None if row is None else codec.job_record(row)

    def jobs(
        self,
        *,
        team: str | None = None,
        queue: str | None = None,
        states: Collection[JobState] | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        after: int | None = None,
        array_id: str | None = None,
    ) -> list[JobRecord]:
        """Jobs by id (newest first if asked); `after` is the last id of the previous page, and the
        page continues in the same order (older ids when newest first)."""
        order = jobs.c.id.desc() if newest_first else jobs.c.id
        query = sa.select(jobs).order_by(order).limit(limit)
        if after is not None:
            query = query.where(jobs.c.id < after if newest_first else jobs.c.id > after)
        if team is not None:
            query = query.where(jobs.c.team == team)
        if queue is not None:
            query = query.where(jobs.c.queue == queue)
        if states is not None:
            query = query.where(jobs.c.state.in_([s.value for s in states]))
        if array_id is not None:
            pk = _pk(array_id)
            query = query.where(jobs.c.array_id == (pk if pk is not None else -1))
        return self._records(query)

    def states(self, job_ids: Collection[str]) -> dict[str, JobState]:
        """The state of each of these jobs that exists (one query, for many log followers at once)."""
        keys = [pk for pk in map(_pk, job_ids) if pk is not None]
        if not keys:
            return {}
        query = sa.select(jobs.c.id, jobs.c.state).where(jobs.c.id.in_(keys))
        with engines.read(self._engine) as connection:
            return {str(job_id): JobState(state) for job_id, state in connection.execute(query)}

    def teams(self, job_ids: Collection[str]) -> dict[str, str]:
        """The team of each of these jobs that exists."""
        keys = [pk for pk in map(_pk, job_ids) if pk is not None]
        if not keys:
            return {}
        query = sa.select(jobs.c.id, jobs.c.team).where(jobs.c.id.in_(keys))
        with engines.read(self._engine) as connection:
            return {str(job_id): team for job_id, team in connection.execute(query)}

    def active(self) -> list[JobRecord]:
        return self._records(sa.select(jobs).where(jobs.c.state.not_in(_TERMINAL)).order_by(jobs.c.id))

    def change_counter(self) -> int:
        """The counter now. At start-up take it BEFORE active() and poll changed_since from it: a job
        submitted in between then shows up (perhaps twice) instead of never."""
        with engines.read(self._engine) as connection:
            newest = connection.execute(sa.select(sa.func.max(jobs.c.change_seq))).scalar_one()
        return int(newest or 0)

    def changed_since(self, seq: int) -> tuple[list[JobRecord], int]:
        """Jobs submitted or cancel-requested after counter `seq`, and the counter to pass next time."""
        with engines.read(self._engine) as connection:
            query = sa.select(jobs).where(jobs.c.change_seq > seq).order_by(jobs.c.change_seq)
            rows = connection.execute(query).mappings().all()
        newest = max([seq, *(row["change_seq"] for row in rows)])
        return [codec.job_record(row) for row in rows], newest

    def counts(self) -> dict[tuple[str, str], int]:
        query = sa.select(jobs.c.queue, jobs.c.state, sa.func.count()).group_by(jobs.c.queue, jobs.c.state)
        with engines.read(self._engine) as connection:
            return {(queue, state): n for queue, state, n in connection.execute(query)}

    def events(
        self, job_id: str | None = None, *, after_seq: int = 0, limit: int | None = 1000
    ) -> list[EventRecord]:
        query = sa.select(events).where(events.c.seq > after_seq).order_by(events.c.seq).limit(limit)
        if job_id is not None:
            query = query.where(events.c.job_id == job_id)
        with engines.read(self._engine) as connection:
            return [codec.event_record(row) for row in connection.execute(query).mappings()]

    def events_of(self, job_ids: Collection[str]) -> dict[str, list[EventRecord]]:
        """Every event of these jobs in one query, by job id, each list in order."""
        out: dict[str, list[EventRecord]] = {job_id: [] for job_id in job_ids}
        if not out:
            return out
        query = sa.select(events).where(events.c.job_id.in_(list(out))).order_by(events.c.seq)
        with engines.read(self._engine) as connection:
            for row in connection.execute(query).mappings():
                event = codec.event_record(row)
                out[event.job_id].append(event)
        return out

    def audit(
        self,
        job_id: str | None = None,
        *,
        after_seq: int = 0,
        limit: int | None = 1000,
        team: str | None = None,
    ) -> list[AuditRecord]:
        """Audit entries in order; `team` keeps those of its jobs, in SQL, so a page is never short."""
        query = sa.select(audit).where(audit.c.seq > after_seq).order_by(audit.c.seq).limit(limit)
        if job_id is not None:
            query = query.where(audit.c.job_id == job_id)
        if team is not None:
            # audit.job_id is text (history never makes a write fail): compare with the id as text
            owned = sa.select(sa.cast(jobs.c.id, sa.String)).where(jobs.c.team == team)
            query = query.where(audit.c.job_id.in_(owned))
        with engines.read(self._engine) as connection:
            return [codec.audit_record(row) for row in connection.execute(query).mappings()]

    # --- the audit chain (scheduler/store/audit_log.py) ------------------------------------------

    def append_audit(self, records: Sequence[AuditRecord]) -> tuple[int, str]:
        """Chain these records in one transaction of their own; the new head (seq, hash)."""
        with engines.write(self._engine) as connection:
            return audit_log.append(connection, records)

    def audit_head(self) -> tuple[int, str] | None:
        """(seq, hash) of the last audit record; None while there is none."""
        with engines.read(self._engine) as connection:
            return audit_log.head(connection)

    def audit_chain(
        self, *, after_seq: int = 0, limit: int | None = 1000, since: float | None = None
    ) -> list[ChainEntry]:
        """Records of the chain in seq order (all of them, with their hashes and canonical content);
        `since` starts at the first record at or after that time instead of after `after_seq`."""
        with engines.read(self._engine) as connection:
            if since is not None:
                first = audit_log.first_seq_since(connection, since)
                if first is None:
                    return []
                after_seq = max(after_seq, first - 1)
            return audit_log.entries(connection, after_seq, limit)

    def audit_denied(self, record: AuditRecord) -> bool:
        """Queue a denied request for the chain (batched, bounded: see DeniedWriter); False if dropped."""
        with self._denied_lock:
            if self._denied is None:
                self._denied = audit_log.DeniedWriter(self._engine)
            writer = self._denied
        return writer.put(record)

    @property
    def audit_dropped(self) -> int:
        """Denied requests not recorded since this process started (the queue was full, the store down)."""
        return 0 if self._denied is None else self._denied.dropped

    def flush_denied(self, timeout: float = 5.0) -> None:
        """Wait until queued denials are written (tests)."""
        if self._denied is not None:
            self._denied.flush(timeout)

    def held_gpus(self) -> dict[tuple[str, int], str]:
        """(node, gpu) → id of the job holding it, from the allocations table (for reconciliation)."""
        query = sa.select(allocations.c.node, allocations.c.gpu, allocations.c.job_id)
        with engines.read(self._engine) as connection:
            return {(node, gpu): str(job_id) for node, gpu, job_id in connection.execute(query)}

    def _records(self, query: sa.Select[Any]) -> list[JobRecord]:
        with engines.read(self._engine) as connection:
            return [codec.job_record(row) for row in connection.execute(query).mappings()]

    # --- controller side -------------------------------------------------------------------------

    def apply(self, batch: Batch, fence: Fence | None = None) -> None:
        """Commit everything one controller step changed, or nothing (AllocationConflict, JobNotFound).

        `fence` runs first inside the same transaction (the leader's epoch check: LockLost refuses
        the whole batch)."""
        if not batch:
            return
        try:
            with engines.write(self._engine) as connection:
                if fence is not None:
                    fence(connection)
                apply_batch(connection, batch)
        except GpuTaken as taken:
            with engines.read(self._engine) as connection:
                raise conflict(connection, taken) from taken.__cause__


def _config_change(connection: Connection, config: Mapping[str, Any], now: float) -> AuditRecord | None:
    """The `config` audit record for this config, or None when it is the one last audited."""
    document = canonical_json(config)
    digest = hashlib.sha256(document.encode("utf-8")).hexdigest()
    query = (
        sa.select(audit.c.detail, audit.c.private_detail)
        .where(audit.c.decision == "config")
        .order_by(audit.c.seq.desc())
        .limit(1)
    )
    last = connection.execute(query).first()
    if last is not None and str(last.detail).startswith(f"sha256:{digest}"):
        return None
    try:
        before = json.loads(last.private_detail) if last is not None else None
    except ValueError:
        before = None
    if isinstance(before, dict):
        changed = sorted(k for k in {*before, *config} if before.get(k) != config.get(k)) or ["format"]
        what = "changed: " + ", ".join(changed)
    else:
        what = "first config audited"
    return AuditRecord(now, "", "config", detail=f"sha256:{digest} ({what})", private_detail=document)


def _next_change_seq(dialect: str) -> Any:
    """The next change_seq value, evaluated inside the write transaction that stores it."""
    if dialect == "postgresql":
        return CHANGE_SEQ.next_value()
    newest = jobs.alias("newest")  # an alias, so that an UPDATE of jobs does not correlate it away
    return sa.select(sa.func.coalesce(sa.func.max(newest.c.change_seq), 0) + 1).scalar_subquery()


def _pk(job_id: str) -> int | None:
    """The key of a job id, or None for one that names no job (also beyond 64 bits)."""
    pk = codec.job_pk(job_id)
    return pk if pk is not None and pk <= _MAX_ID else None


def _same_spec(existing: JobRecord, spec: JobSpec, team: str) -> JobRecord:
    if existing.job.spec != spec:
        assert spec.idempotency_key is not None
        raise IdempotencyConflict(team, spec.idempotency_key, existing.id)
    return existing
