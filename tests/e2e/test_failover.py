"""Replicated controllers, end to end: `corral up --replicas 2` on one store (SQLite, then
PostgreSQL), the real CLI, real processes killed with SIGKILL or paused with SIGSTOP.

Failover must take at most the lease (3 s here) + a try interval + recovery; the new leader adopts
the running jobs (never restarting them) and schedules new ones; a paused leader that wakes up
finds its lease gone, stops acting, and no job is started twice.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from scheduler.store.local_postgres import LocalPostgres
from tests.e2e.conftest import HERE, Corral

LEASE_S = 3.0
FAILOVER_BOUND_S = LEASE_S + 1.0 + 6.0  # lease + one try interval + recovery and the first cycle


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("corral-failover")
    yield path
    c = Corral(path)
    c.run("down", check=False, timeout=120)


@pytest.fixture(scope="module")
def postgres() -> Iterator[LocalPostgres]:
    server = LocalPostgres.start(fast=True)
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def pair(request: pytest.FixtureRequest, home: Path) -> Iterator[Corral]:
    """Two controllers on one store; the local Ray cluster is shared by both parameters."""
    c = Corral(home)
    c.env["CORRAL_LEASE_S"] = str(LEASE_S)
    c.env["CORRAL_TIMEOUT_S"] = "5"  # a paused replica: the CLI moves on to the next URL sooner
    _stop_controllers(c)
    if request.param == "sqlite":
        db = f"sqlite:///{home / f'failover-{uuid.uuid4().hex[:6]}.db'}"
    else:
        db = request.getfixturevalue("postgres").create_database(f"f_{uuid.uuid4().hex}")
    c.run("up", "--config", str(HERE / "cluster.yaml"), "--replicas", "2", "--db", db, timeout=240)
    yield c
    _stop_controllers(c)


def _stop_controllers(c: Corral) -> None:
    """Stop every controller, leave the Ray cluster (the next store's pair reuses it)."""
    state_file = c.home / "local.json"
    if not state_file.exists():
        return
    for ctl in json.loads(state_file.read_text()).get("controllers", []):
        try:
            proc = psutil.Process(ctl["pid"])
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            proc.wait(20)
        except psutil.Error:
            pass


def _controllers(c: Corral) -> list[dict[str, Any]]:
    return list(json.loads((c.home / "local.json").read_text())["controllers"])


def _healthz(url: str) -> dict[str, Any]:
    try:
        return dict(httpx.get(f"{url}/healthz", timeout=2).json())
    except (httpx.HTTPError, ValueError):
        return {}


def _leader(c: Corral, timeout: float = 30) -> tuple[dict[str, Any], float]:
    """The controller that leads (waiting for one), and how long the wait was."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for ctl in _controllers(c):
            if psutil.pid_exists(ctl["pid"]) and _healthz(ctl["api_url"]).get("leader"):
                return ctl, time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"no leader within {timeout} s: {[_healthz(x['api_url']) for x in _controllers(c)]}")


def _starts(job: dict[str, Any]) -> int:
    return sum(1 for e in job["history"] if e["kind"] == "STARTED")


def test_status_lists_both_controllers_one_leading(pair: Corral) -> None:
    leader, _ = _leader(pair)
    listed = pair.status()["controllers"]
    assert sorted(x["pid"] for x in listed) == sorted(x["pid"] for x in _controllers(pair))
    assert [x["pid"] for x in listed if x["leader"]] == [leader["pid"]]
    assert all(x["epoch"] >= 1 for x in listed if x["leader"])
    assert {"pid", "leader", "api_url", "epoch"} <= set(listed[0])


def test_a_follower_serves_reads_and_submissions(pair: Corral) -> None:
    leader, _ = _leader(pair)
    follower = next(x for x in _controllers(pair) if x["pid"] != leader["pid"])
    pair.env["CORRAL_API_URL"] = follower["api_url"]
    try:
        queues = json.loads(pair.run("queues", "-o", "json").stdout)
        assert {q["name"] for q in queues} >= {"default", "vision", "nlp"}  # the leader's view
        job_id = pair.submit("--gpus", "1", "--", "echo", "via-follower")
        done = pair.wait_for(job_id, ["SUCCEEDED"], timeout=60)
        assert _starts(done) == 1
        dry = pair.run("submit", "--dry-run", "--gpus", "1", "--", "true", check=False)
        assert dry.returncode != 0 and "follower" in dry.stderr  # only the leader answers a dry run
    finally:
        pair.env.pop("CORRAL_API_URL")


def test_a_paused_leader_is_fenced_and_starts_nothing_twice(pair: Corral) -> None:
    leader, _ = _leader(pair)
    proc = psutil.Process(leader["pid"])
    proc.suspend()  # SIGSTOP: a long GC pause, a frozen VM, a partition
    try:
        new, _ = _leader(pair, timeout=FAILOVER_BOUND_S + 20)
        assert new["pid"] != leader["pid"]
        jobs = [pair.submit("--gpus", "1", "--", "sleep", "4") for _ in range(3)]
        for job_id in jobs:
            pair.wait_for(job_id, ["RUNNING", "SUCCEEDED"], timeout=60)
    finally:
        proc.resume()  # SIGCONT: it wakes up believing it leads
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _healthz(leader["api_url"]).get("leader"):
        time.sleep(0.2)
    assert not _healthz(leader["api_url"]).get("leader"), "the woken leader did not step down"
    assert _leader(pair)[0]["pid"] == new["pid"]  # the new leader keeps leading
    log = Path(leader["log"]).read_text(errors="replace")
    assert "stepping down as leader" in log  # its lease was gone: it acted no more
    for job_id in jobs:
        done = pair.wait_for(job_id, ["SUCCEEDED"], timeout=60)
        assert _starts(done) == 1 and done["restart_count"] == 0, done["history"]
    # The woken process is a follower now: it still serves the API.
    pair.env["CORRAL_API_URL"] = leader["api_url"]
    try:
        assert pair.describe(jobs[0])["state"] == "SUCCEEDED"
    finally:
        pair.env.pop("CORRAL_API_URL")


def test_kill_9_of_the_leader_fails_over_and_adopts_running_jobs(pair: Corral) -> None:
    leader, _ = _leader(pair)
    running = pair.submit("--gpus", "2", "--", "sleep", "300")
    before = pair.wait_for(running, ["RUNNING"], timeout=60)
    os.kill(leader["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    new, _ = _leader(pair, timeout=FAILOVER_BOUND_S + 20)
    took = time.monotonic() - t0
    print(f"failover after kill -9: {took:.1f} s (lease {LEASE_S:g} s)")  # shown with -s
    assert new["pid"] != leader["pid"]
    assert took <= FAILOVER_BOUND_S, f"failover took {took:.1f} s (bound {FAILOVER_BOUND_S} s)"
    # The CLI's context lists both URLs: the dead first one is skipped.
    after = pair.describe(running)
    assert after["state"] == "RUNNING" and after["restart_count"] == before["restart_count"] == 0
    assert _starts(after) == 1, after["history"]  # adopted, not restarted
    fresh = pair.submit("--gpus", "1", "--", "echo", "after-failover")
    assert pair.wait_for(fresh, ["SUCCEEDED"], timeout=60)["restart_count"] == 0
    pair.run("cancel", running)
    pair.wait_for(running, ["CANCELLED"], timeout=60)
    # `corral up` again starts the dead replica on its port: two controllers, one leading.
    restarted = pair.run("up", timeout=120)
    assert f"restarted the controller at {leader['api_url']}" in restarted.stderr
    listed = pair.status()["controllers"]
    assert all(x["pid"] for x in listed) and [x["leader"] for x in listed].count(True) == 1
