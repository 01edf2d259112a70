"""Schema creation, re-opening, concurrent opening, and migrations that match the tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from scheduler.store import migrate
from scheduler.store.engine import normalize_url
from scheduler.store.schema import metadata
from scheduler.store.store import Store
from tests.store.helpers import spec

ROOT = Path(__file__).resolve().parents[2]


def test_open_creates_every_table_at_head(store: Store) -> None:
    assert migrate.current(store.engine) == migrate.head()
    tables = set(sa.inspect(store.engine).get_table_names())
    expected = {"jobs", "allocations", "events", "audit", "queues", "queue_usage", "node_cordons"}
    assert expected | {"alembic_version"} <= tables
    assert store.dialect == store.engine.dialect.name


def test_reopen_is_idempotent_and_keeps_data(db_url: str) -> None:
    first = Store.open(db_url)
    record, _ = first.submit(spec(), "team-a", 1.0)
    first.close()
    for _ in range(2):
        again = Store.open(db_url)
        assert again.get(record.id) == record
        assert migrate.current(again.engine) == migrate.head()
        again.close()


def test_migrations_create_exactly_the_tables_of_schema_py(store: Store) -> None:
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
    assert diff == []


def test_two_processes_open_a_fresh_database_at_once(db_url: str) -> None:
    code = (
        "import sys; from scheduler.store.store import Store; from tests.store.helpers import spec;"
        "s = Store.open(sys.argv[1]); print(s.submit(spec(), 'team-a', 1.0)[0].id); s.close()"
    )
    children = [
        subprocess.Popen([sys.executable, "-c", code, db_url], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=60)[0] for child in children]
    assert [child.returncode for child in children] == [0, 0]
    assert sorted(int(out) for out in outputs) == [1, 2]


def test_postgresql_urls_use_psycopg_3() -> None:
    assert normalize_url("postgresql://u:p@db:5432/corral").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@db/corral").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"


def test_upgrade_from_the_first_release_keeps_every_job(db_url: str) -> None:
    """A database written by the first release (schema 0001) opens at head with its jobs intact."""
    from alembic import command

    from scheduler.store import engine as engines

    engine = engines.create(db_url)
    with engines.write(engine) as connection:
        command.upgrade(migrate.config(connection), "0001_initial")
        # a job and its history as the first release wrote them (its columns only)
        connection.execute(
            sa.text(
                "INSERT INTO jobs (id, team, queue, name, state, priority, spec, submitted_at,"
                " restart_count, preemption_count, attained_gpu_s, pending_reason, change_seq, updated_at)"
                " VALUES (1, 'team-a', 'default', 'old job', 'PENDING', 'normal', :spec, 1.0, 0, 0, 0.0,"
                " 'WaitingForScheduling', 1, 1.0)"
            ),
            {"spec": '{"name": "old job", "command": []}'},
        )
        connection.execute(
            sa.text(
                "INSERT INTO events (job_id, time, kind, message, attempt, node)"
                " VALUES ('1', 1.0, 'SUBMITTED', 'queue default', 0, '')"
            )
        )
    engine.dispose()
    store = Store.open(db_url)
    try:
        assert migrate.current(store.engine) == migrate.head()
        record = store.get("1")
        assert record is not None and record.job.spec.name == "old job"  # a name today's rules refuse
        assert record.start_failures == 0 and record.retry_at is None
        assert [(e.kind, e.private_detail) for e in store.events("1")] == [("SUBMITTED", "")]
    finally:
        store.close()
