"""Fail closed: while the store is down (PostgreSQL stopped) or locked (SQLite), the API answers 503
with Retry-After — never 500, never a traceback — accepts nothing it has not committed, reports not
ready, and the controller stops deciding; when the store returns, work resumes and nothing is lost.
Real parts: a real PostgreSQL server halted and restarted, the real app behind uvicorn, the real
controller, the real CLI as a subprocess."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scheduler.model.job import JobState
from scheduler.store.batcher import SubmitBatcher
from scheduler.store.local_postgres import LocalPostgres
from tests.api.harness import Served, until

BODY = {"name": "j", "queue": "ml-a", "gpus_per_node": 1, "command": ["true"]}


@pytest.fixture
def postgres() -> Iterator[LocalPostgres]:
    server = LocalPostgres.start(fast=True)
    yield server
    server.stop()


def _submit(http: httpx.Client, served: Served, who: str = "a", key: str | None = None) -> httpx.Response:
    headers = served.h.auth(who) | ({"Idempotency-Key": key} if key else {})
    return http.post("/v1/jobs", json=BODY, headers=headers)


def _fails_closed(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "2"
    body = r.json()
    assert body["error"].startswith("the store is unavailable (") and "\n" not in body["error"]
    assert "Traceback" not in r.text and "password" not in r.text


def test_postgres_down_fails_closed_and_nothing_is_lost(tmp_path: Path, postgres: LocalPostgres) -> None:
    url = postgres.create_database(f"o_{uuid.uuid4().hex}")
    with Served(tmp_path, db_url=url) as served, httpx.Client(base_url=served.server.url, timeout=30) as http:
        accepted = [_submit(http, served).json()["id"] for _ in range(3)]
        for job_id in accepted:
            served.h.wait_for(job_id, [JobState.STARTING, JobState.RUNNING])
        errors_before = served.h.controller.store_errors
        postgres.halt()
        try:
            _fails_closed(_submit(http, served))  # a cached token: the submission itself fails
            _fails_closed(_submit(http, served, who="b"))  # a token not seen yet: its lookup fails
            _fails_closed(http.get("/v1/jobs", headers=served.h.auth("a")))
            ready = http.get("/healthz")
            assert ready.status_code == 503 and ready.json()["checks"]["store"].startswith("unreachable")
            until(lambda: served.h.controller.store_errors > errors_before, "the controller's failed step")
            cycles = served.h.controller.cycles
            time.sleep(1.0)
            assert served.h.controller.cycles == cycles  # it stopped deciding
            cli = served.cli("a")
            out = cli("submit", "--gpus", "1", "--", "true", env={"CORRAL_RETRIES": "1"})
            assert out.returncode == 5, out.stderr  # unreachable, after retrying
            assert out.stderr.count("\n") <= 2 and "Traceback" not in out.stderr
            assert "the store is unavailable" in out.stderr and "gave up after 1 retries" in out.stderr
        finally:
            postgres.restart()
        until(lambda: http.get("/healthz").status_code == 200, "ready again")
        after = _submit(http, served).json()["id"]
        served.h.wait_for(after, [JobState.STARTING, JobState.RUNNING])
        listed = {j["id"] for j in http.get("/v1/jobs", headers=served.h.auth("a")).json()}
        assert set(accepted) | {after} <= listed  # every accepted job is still there
        assert len(served.h.store.jobs()) == 4  # and nothing the outage refused was stored


def test_sqlite_locked_fails_closed_then_resumes(tmp_path: Path) -> None:
    with Served(tmp_path) as served, httpx.Client(base_url=served.server.url, timeout=60) as http:
        first = _submit(http, served).json()["id"]
        holder = sqlite3.connect(tmp_path / "corral.db", timeout=1)
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock past the busy timeout
        try:
            r = _submit(http, served, key="k-1")
            _fails_closed(r)
            assert "locked" in r.json()["error"]
            assert http.get(f"/v1/jobs/{first}", headers=served.h.auth("a")).status_code == 200  # reads go on
        finally:
            holder.rollback()
            holder.close()
        again = _submit(http, served, key="k-1")  # the client's retry, same key: one job
        assert again.status_code == 201, again.text
        assert [j.id for j in served.h.store.jobs()] == [first, again.json()["id"]]


def test_overload_is_429_with_backpressure(tmp_path: Path) -> None:
    with Served(tmp_path) as served, httpx.Client(base_url=served.server.url, timeout=60) as http:
        batcher: SubmitBatcher = served.h.app.state.deps.batcher
        batcher._max_pending = 2  # small, so that two stalled submissions fill it
        holder = sqlite3.connect(tmp_path / "corral.db", timeout=1)
        holder.execute("BEGIN EXCLUSIVE")  # the writer stalls on the lock: submissions pile up
        waiting = [threading.Thread(target=_submit, args=(http, served)) for _ in range(2)]
        try:
            for t in waiting:
                t.start()
            until(lambda: batcher._pending >= 2, "two submissions waiting")
            r = _submit(http, served)
            assert r.status_code == 429 and r.headers["Retry-After"] == "1", r.text
            assert "too many submissions are waiting" in r.json()["error"]
        finally:
            holder.rollback()
            holder.close()
            for t in waiting:
                t.join(30)
        assert _submit(http, served).status_code == 201  # the queue drained: accepted again


def test_a_controller_that_has_not_seen_the_cluster_answers_503_not_400(tmp_path: Path) -> None:
    """Just started or just took over: its first cycle has not read the nodes yet. A valid spec
    must not be refused as "no nodes in region": 503 + Retry-After, and the client retries."""
    from tests.api.harness import Harness, Server

    h = Harness(tmp_path)  # not opened: the controller has made no cycle
    try:
        with Server(h.app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
            r = http.post("/v1/jobs", json={**BODY, "data_region": "cn-north"}, headers=h.auth("admin"))
            assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
            assert "has not seen the cluster yet" in r.json()["error"]
            assert h.store.jobs() == []
            h.open()  # its first cycle: the same spec is accepted
            ok = http.post("/v1/jobs", json={**BODY, "data_region": "cn-north"}, headers=h.auth("admin"))
            assert ok.status_code == 201, ok.text
    finally:
        h.close()


def test_a_controller_that_never_saw_a_node_answers_503_not_400(tmp_path: Path) -> None:
    """Found by the chaos soak: on an overloaded machine a controller that had just taken over made
    its first cycle while Ray listed no nodes, and valid submissions were refused with 400 "no nodes
    in region ...: use one of (none)". A cluster it has never seen a node of is a passing state, not
    the user's mistake (once seen, a node stays in the view, DOWN if it left)."""
    from tests.api.harness import Harness, Server

    h = Harness(tmp_path, declared_nodes=False)
    nodes = list(h.backend.node_list)
    h.backend.node_list = []  # Ray lists nothing at the new leader's first cycle
    h.open()
    try:
        with Server(h.app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
            r = http.post("/v1/jobs", json={**BODY, "data_region": "cn-north"}, headers=h.auth("admin"))
            assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
            assert "sees no nodes" in r.json()["error"]
            assert h.store.jobs() == []
            h.backend.node_list = nodes
            h.controller.wake()
            until(lambda: bool(h.controller.view().nodes), "the nodes listed")
            ok = http.post("/v1/jobs", json={**BODY, "data_region": "cn-north"}, headers=h.auth("admin"))
            assert ok.status_code == 201, ok.text
    finally:
        h.close()
