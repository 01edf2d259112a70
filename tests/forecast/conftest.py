"""Shared fixtures of the controller tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.store.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real SQLite store in the test's folder."""
    s = Store.open(f"sqlite:///{tmp_path / 'corral.db'}")
    yield s
    s.close()
