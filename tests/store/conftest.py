"""Every store test runs on SQLite (a file) and on PostgreSQL (a fresh database in one throwaway server
per pytest worker). PostgreSQL that cannot start fails the tests: it never skips them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.store.local_postgres import LocalPostgres
from scheduler.store.store import Store


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    server = LocalPostgres.start(fast=True)  # fsync off: the tests kill clients, never the server
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'corral.db'}"
    server: LocalPostgres = request.getfixturevalue("postgres_server")
    return server.create_database(f"t_{uuid.uuid4().hex}")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    opened = Store.open(db_url)
    yield opened
    opened.close()
