"""Alembic environment: always runs on the connection that scheduler.store.migrate hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from scheduler.store.schema import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through scheduler.store.migrate.upgrade(), not the alembic CLI")

context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():  # a no-op inside the caller's transaction
    context.run_migrations()
