"""Fixtures for the API tests: a real app over a real SQLite store (see harness.py)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

with warnings.catch_warnings():  # starlette's note about httpx2 is not ours to act on
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from scheduler.store.store import Store
from tests.api.harness import FakeController, build


class Api:
    def __init__(self, tmp: Path) -> None:
        self.app, self.store, self.controller, self.log_dir = build(tmp)
        self.client = TestClient(self.app, raise_server_exceptions=False)

    def count(self) -> int:
        return len(self.store.jobs())


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    api = Api(tmp_path)
    with api.client:
        yield api
    api.store.close()


@pytest.fixture
def store(api: Api) -> Store:
    return api.store


@pytest.fixture
def controller(api: Api) -> FakeController:
    return api.controller
