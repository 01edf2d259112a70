"""What the controller keeps in the store besides jobs: fair-share usage and cordoned nodes.

The controller writes both inside its step transactions (Batch.usage, Batch.cordons); these are the
reads it does at start and periodically, and the one admin write (uncordon). A small module of its
own so that store.py stays the jobs' API.
"""

from __future__ import annotations

import sqlalchemy as sa

from scheduler.model.records import AuditRecord, Cordon, UsageRecord
from scheduler.store import audit_log, codec
from scheduler.store import engine as engines
from scheduler.store.schema import node_cordons, queue_usage
from scheduler.store.store import Store

__all__ = ["cordon", "cordons", "ping", "uncordon", "usage"]


def usage(store: Store) -> dict[str, UsageRecord]:
    """Each queue's persisted fair-share usage (queues never charged are absent)."""
    with engines.read(store.engine) as connection:
        rows = connection.execute(sa.select(queue_usage)).mappings()
        return {row["queue"]: codec.usage_record(row) for row in rows}


def cordons(store: Store) -> dict[str, Cordon]:
    """Cordoned nodes by id."""
    with engines.read(store.engine) as connection:
        rows = connection.execute(sa.select(node_cordons).order_by(node_cordons.c.node)).mappings()
        return {row["node"]: codec.cordon_record(row) for row in rows}


def uncordon(store: Store, node: str, now: float = 0.0, by: str = "admin") -> bool:
    """Let the node take new jobs again (audited as `by`'s); False if it was not cordoned."""
    with engines.write(store.engine) as connection:
        done = connection.execute(sa.delete(node_cordons).where(node_cordons.c.node == node)).rowcount > 0
        if done:
            entry = AuditRecord(now, "", "uncordon", nodes=(node,), detail="uncordoned", actor=by)
            audit_log.append(connection, [entry])
        return done


def ping(store: Store) -> None:
    """One round trip to the database (raises if it cannot be reached): for health checks."""
    with engines.read(store.engine) as connection:
        connection.execute(sa.text("SELECT 1")).scalar_one()


def cordon(store: Store, record: Cordon, actor: str = "") -> None:
    """Take a node out of scheduling (an admin's cordon, audited as `actor`'s, else `record.by`'s;
    the controller writes its own in its steps)."""
    with engines.write(store.engine) as connection:
        connection.execute(sa.delete(node_cordons).where(node_cordons.c.node == record.node))
        connection.execute(sa.insert(node_cordons), [codec.cordon_columns(record)])
        entry = AuditRecord(
            record.at, "", "cordon", nodes=(record.node,), detail=record.reason, actor=actor or record.by
        )
        audit_log.append(connection, [entry])
