"""Fixtures for the API tests: the real app, store and controller (see harness.py)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

with warnings.catch_warnings():  # starlette's note about httpx2 is not ours to act on
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from scheduler.api.app import ApiSettings
from scheduler.store.store import Store
from tests.api.harness import Harness


class Api(Harness):
    """A Harness with an in-process client (TestClient), its controller running, tokens made."""

    def __init__(self, tmp: Path, settings: ApiSettings | None = None) -> None:
        super().__init__(tmp, settings)
        self.client = TestClient(self.app, raise_server_exceptions=False)

    def count(self) -> int:
        return len(self.store.jobs())

    def submit(self, who: str = "a", **spec: object) -> str:
        """Submit through the API; the new job's id."""
        body = {"name": "j", "queue": "ml-a", "gpus_per_node": 1, "command": ["true"], **spec}
        r = self.client.post("/v1/jobs", json=body, headers=self.auth(who))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


@contextmanager
def running_api(tmp: Path, settings: ApiSettings | None = None) -> Iterator[Api]:
    api = Api(tmp, settings)
    api.open()
    try:
        with api.client:
            api.make_tokens(api.client)
            yield api
    finally:
        api.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api(tmp_path) as running:
        yield running


@pytest.fixture
def store(api: Api) -> Store:
    return api.store
