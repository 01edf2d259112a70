"""Store.apply's work inside its one transaction: controller columns, GPU rows, history, reasons."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from scheduler.model.job import JobState
from scheduler.model.records import Batch, JobRecord
from scheduler.store import audit_log, codec
from scheduler.store.errors import AllocationConflict, JobNotFound
from scheduler.store.schema import allocations, events, jobs, node_cordons, queue_usage

_CHUNK = 500  # ids per IN (...): far below SQLite's and PostgreSQL's bind-parameter limits
_T = TypeVar("_T")


class GpuTaken(Exception):
    """Raised inside the transaction (so that it rolls back); turned into AllocationConflict after."""

    def __init__(self, rows: list[dict[str, Any]], moved: set[int]) -> None:
        super().__init__("UNIQUE(node, gpu) violated")
        self.rows = rows
        self.moved = moved


def apply_batch(connection: Connection, batch: Batch) -> None:
    if batch.updates:
        _update_jobs(connection, batch.updates)
    if batch.events:
        connection.execute(sa.insert(events), [codec.event_columns(e) for e in batch.events])
    reasons = [
        {"b_id": pk, "pending_reason": reason}
        for job_id, reason in batch.pending_reasons.items()
        if (pk := codec.job_pk(job_id)) is not None
    ]
    if reasons:
        still_pending = jobs.c.state == JobState.PENDING.value
        connection.execute(sa.update(jobs).where(jobs.c.id == sa.bindparam("b_id"), still_pending), reasons)
    if batch.usage:
        # Delete then insert: an upsert both databases run the same way, inside the one transaction.
        connection.execute(
            sa.delete(queue_usage).where(queue_usage.c.queue.in_([u.queue for u in batch.usage]))
        )
        connection.execute(sa.insert(queue_usage), [codec.usage_columns(u) for u in batch.usage])
    if batch.cordons:
        connection.execute(
            sa.delete(node_cordons).where(node_cordons.c.node.in_([c.node for c in batch.cordons]))
        )
        connection.execute(sa.insert(node_cordons), [codec.cordon_columns(c) for c in batch.cordons])
    if batch.audit:  # last: the audit lock is held only from here to the commit
        audit_log.append(connection, batch.audit)


def _update_jobs(connection: Connection, updates: list[JobRecord]) -> None:
    latest: dict[int, JobRecord] = {}  # the last update of a job in the batch wins
    for record in updates:
        pk = codec.job_pk(record.id)
        if pk is None:
            raise JobNotFound(record.id)
        latest[pk] = record

    stored: dict[int, tuple[Any, int]] = {}
    for chunk in _chunks(list(latest)):
        query = sa.select(jobs.c.id, jobs.c.allocation, jobs.c.restart_count).where(jobs.c.id.in_(chunk))
        stored.update({row.id: (row.allocation, row.restart_count) for row in connection.execute(query)})
    for pk, record in latest.items():
        if pk not in stored:
            raise JobNotFound(record.id)

    rewrite = sa.update(jobs).where(jobs.c.id == sa.bindparam("b_id"))
    connection.execute(rewrite, [{"b_id": pk, **codec.controller_columns(r)} for pk, r in latest.items()])

    moved = {
        pk
        for pk, r in latest.items()
        if stored[pk] != (codec.allocation_json(r.allocation), r.job.restart_count)
    }
    if not moved:
        return
    # Release every moved job's GPUs before taking any: a GPU may pass from one job to another in a batch.
    for chunk in _chunks(sorted(moved)):
        connection.execute(sa.delete(allocations).where(allocations.c.job_id.in_(chunk)))
    rows = [
        {"job_id": pk, "attempt": r.job.restart_count, "node": n.node, "gpu": gpu}
        for pk, r in latest.items()
        if pk in moved and r.allocation is not None
        for n in r.allocation.nodes
        for gpu in n.gpus
    ]
    if rows:
        try:
            connection.execute(sa.insert(allocations), rows)
        except IntegrityError as exc:
            raise GpuTaken(rows, moved) from exc


def conflict(connection: Connection, taken: GpuTaken) -> AllocationConflict:
    """Name the GPU of a rolled-back batch that two jobs wanted (read after the rollback)."""
    first: dict[tuple[str, int], int] = {}
    for row in taken.rows:
        key = (row["node"], row["gpu"])
        if key in first:
            return AllocationConflict(key[0], key[1], (str(first[key]), str(row["job_id"])))
        first[key] = row["job_id"]
    nodes = sorted({node for node, _ in first})
    query = sa.select(allocations).where(allocations.c.node.in_(nodes)).order_by(allocations.c.node)
    for held in connection.execute(query).mappings():
        key = (held["node"], held["gpu"])
        if key in first and held["job_id"] not in taken.moved:
            return AllocationConflict(key[0], key[1], (str(held["job_id"]), str(first[key])))
    # Nothing to name any more (the holder left since): still a conflict, reported on the first GPU.
    node, gpu = next(iter(first))
    return AllocationConflict(node, gpu, (str(first[(node, gpu)]),))


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
