"""Bring a database's schema to alembic head, programmatically (no alembic.ini: works from a wheel)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from scheduler.store import engine as engines

MIGRATIONS = Path(__file__).with_name("migrations")


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision


def current(engine: Engine) -> str | None:
    with engines.read(engine) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Create or upgrade the schema. Safe from several processes at once: the upgrade runs inside one
    write transaction (BEGIN IMMEDIATE on SQLite, whose DDL is transactional; an advisory lock on
    PostgreSQL), so a second process waits and then finds the schema already at head."""
    target = head()
    if current(engine) == target:  # the common case: no write lock at all
        return
    with engines.write(engine) as connection:
        engines.lock(connection, engines.MIGRATE_LOCK)
        command.upgrade(config(connection), target)
