"""The real API over a real SQLite store and the real Controller, for the API and CLI tests.

Jobs move as in production: the controller places them (decide()) and starts them on a scripted
backend (tests/control/scripted.py), which reports STARTED and EXITED when a test says so
(`start`, `finish`). Tokens are made as an admin makes them: the bootstrap admin token is stored
the way `corral serve` stores it, and every team token is created through POST /v1/tokens.

    tokens: a → team ml-a, b → team ml-b, vision → team vision (queues: ml-b only),
            limited → team ml-a (max priority normal, at most 8 GPUs per job),
            revoked → team ml-a (revoked), admin → the bootstrap admin (team admin)
    cluster: cn-north 2×8 H100 + 1×8 A100, eu-west 2×8 H100; queues ml-a, ml-b, default
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import httpx
import uvicorn
from fastapi import FastAPI

from scheduler.api.app import ApiSettings, create_app
from scheduler.backends.base import EventKind
from scheduler.clock import WallClock
from scheduler.config.live import LiveConfig, parse_live_config
from scheduler.control.controller import Controller
from scheduler.control.suggestions import team_queues
from scheduler.model.cluster import Node
from scheduler.model.job import Job, JobState
from scheduler.model.plan import Allocation
from scheduler.model.records import JobRecord
from scheduler.store.store import Store
from scheduler.store.token_store import TokenStore
from tests.control.scripted import ScriptedBackend

CLUSTER_YAML = """
regions:
  - name: cn-north
    racks:
      - {name: r1, nodes: 2, gpu_type: H100, gpus_per_node: 8}
      - {name: a1, nodes: 1, gpu_type: A100, gpus_per_node: 8}
  - name: eu-west
    racks:
      - {name: r1, nodes: 2, gpu_type: H100, gpus_per_node: 8}
queues:
  - {name: ml-a, cohort: c, quota: {H100: 16, A100: 8}}
  - {name: ml-b, cohort: c, quota: {H100: 16}}
  - {name: default, cohort: c, quota: {H100: 0}}
"""
# No protection from preemption by default: preemption tests need not wait, and any min_runtime_s
# above 0 is "protection" a token must be allowed.
LIVE_YAML = CLUSTER_YAML + "policy:\n  default_min_runtime_s: 0\n"

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "corral_bootstrap-admin-token-of-the-api-tests"
WAIT_S = 10.0
TEAM_TOKENS: dict[str, dict[str, Any]] = {
    "a": {"team": "ml-a"},
    "b": {"team": "ml-b"},
    "vision": {"team": "vision", "queues": ["ml-b"]},
    "limited": {"team": "ml-a", "max_priority": "normal", "max_gpus_per_job": 8},
    "revoked": {"team": "ml-a", "description": "revoked at once"},
}
HOLDING = (JobState.STARTING, JobState.RUNNING, JobState.PREEMPTING)


class Http(Protocol):
    """What the tests need of an HTTP client (TestClient, httpx.Client)."""

    def post(self, url: str, **kwargs: Any) -> httpx.Response: ...

    def delete(self, url: str, **kwargs: Any) -> httpx.Response: ...


class ThreadSafeBackend(ScriptedBackend):
    """The scripted backend, driven from the test thread while the controller thread polls it;
    an event wakes the controller at once (as RayBackend's do)."""

    def __init__(self, nodes: list[Node]) -> None:
        super().__init__(nodes)
        self._lock = threading.Lock()
        self.on_event: Callable[[], None] | None = None

    def start(self, job: Job, allocation: Allocation) -> None:
        with self._lock:
            super().start(job, allocation)

    def stop(self, job: Job, grace_s: float) -> None:
        with self._lock:
            super().stop(job, grace_s)

    def poll(self) -> list[Any]:
        with self._lock:
            return super().poll()

    def stops_of(self, job_id: str) -> list[tuple[str, int, float]]:
        with self._lock:
            return [s for s in self.stopped if s[0] == job_id]

    def emit(self, kind: EventKind, job_id: str, attempt: int, t: float, code: int | None = None) -> None:
        with self._lock:
            super().emit(kind, job_id, attempt, t, code)
        if self.on_event is not None:
            self.on_event()


class Harness:
    """Store, controller, backend and app in the folder `tmp`; `open()` starts the controller."""

    def __init__(
        self,
        tmp: Path,
        settings: ApiSettings | None = None,
        db_url: str | None = None,
        declared_nodes: bool = True,
    ) -> None:
        """`declared_nodes=False`: the cluster file declares none (as `corral up`'s: Ray lists them)."""
        self.config: LiveConfig = parse_live_config(LIVE_YAML)
        self.clock = WallClock()
        self.store = Store.open(db_url or f"sqlite:///{tmp / 'corral.db'}")
        self.tokens = TokenStore(self.store.engine)
        self.tokens.ensure_admin(ADMIN_TOKEN, self.clock.now())  # what `corral serve` does
        self.backend = ThreadSafeBackend(list(self.config.cluster.nodes))
        if not declared_nodes:
            cluster = self.config.cluster.model_copy(update={"nodes": ()})
            self.config = replace(self.config, cluster=cluster)
        self.controller = Controller(
            self.store,
            self.backend,
            self.config,
            self.clock,
            poll_s=0.02,
            min_decide_interval_s=0.0,
            team_queues=lambda: team_queues(self.tokens.list(include_revoked=False)),  # as `corral serve`
        )
        self.log_dir = tmp / "logs"
        self.log_dir.mkdir()
        # as `corral serve` does: "protection" is what the policy's default does not give
        self.settings = replace(
            settings or ApiSettings(log_poll_s=0.05),
            default_min_runtime_s=self.config.policy.default_min_runtime_s,
        )
        self.app: FastAPI = create_app(
            self.store,
            self.controller,
            self.tokens,
            self.log_dir,
            self.clock,
            settings=self.settings,
            metrics_registry=self.controller.metrics.registry,  # /metrics as `corral serve` serves it
        )
        self.secrets: dict[str, str] = {"admin": ADMIN_TOKEN}

    def open(self) -> None:
        self.controller.start()
        until(lambda: self.controller.cycles > 0, "the controller's first cycle")

    def close(self) -> None:
        self.controller.stop()
        self.store.close()

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets[who]}"}

    def make_tokens(self, http: Http) -> None:
        """Create the team tokens through POST /v1/tokens (and revoke one), as an admin would."""
        ids = {}
        for who, body in TEAM_TOKENS.items():
            r = http.post("/v1/tokens", json=body, headers=self.auth("admin"))
            assert r.status_code == 201, r.text
            self.secrets[who], ids[who] = r.json()["token"], r.json()["id"]
        r = http.delete(f"/v1/tokens/{ids['revoked']}", headers=self.auth("admin"))
        assert r.status_code == 200, r.text

    def counts(self) -> tuple[int, int, int]:
        """Rows of jobs, events and the jobs' audit records: a refused request must leave them as they
        were (its own audit record, decision `denied`, concerns no job; tokens and config neither)."""
        return (
            len(self.store.jobs()),
            len(self.store.events(limit=None)),
            len([a for a in self.store.audit(limit=None) if a.job_id]),
        )

    # --- moving jobs as the backend would report them ---------------------------------------------

    def wait_for(self, job_id: str, states: Collection[JobState], what: str = "") -> JobRecord:
        record: JobRecord | None = None

        def reached() -> bool:
            nonlocal record
            record = self.store.get(job_id)
            return record is not None and record.state in states

        until(reached, what or f"job {job_id} in {sorted(s.value for s in states)}", self._why(job_id))
        assert record is not None
        return record

    def _why(self, job_id: str) -> Callable[[], str]:
        def why() -> str:
            r = self.store.get(job_id)
            return "missing" if r is None else f"{r.state.value}: {r.pending_reason}"

        return why

    def start(self, job_id: str) -> JobRecord:
        """Wait until the controller placed the job, then report it started; the RUNNING record."""
        placed = self.wait_for(job_id, HOLDING)
        if placed.state is JobState.STARTING:
            self.backend.emit(EventKind.STARTED, job_id, placed.job.restart_count, self.clock.now())
        return self.wait_for(job_id, [JobState.RUNNING])

    def finish(self, job_id: str, state: JobState = JobState.SUCCEEDED, exit_code: int = 0) -> JobRecord:
        """End the job in `state` the way production does (run and exit, or cancel)."""
        if state is JobState.CANCELLED:
            self.store.request_cancel(job_id, 0.0, self.clock.now())
            self.controller.wake()
            record = self.wait_for(job_id, [JobState.CANCELLED, *HOLDING])
            if record.state is not JobState.CANCELLED:
                until(lambda: bool(self.backend.stops_of(job_id)), f"the stop of job {job_id}")
                self.exit(job_id, 143)
            return self.wait_for(job_id, [JobState.CANCELLED])
        record = self.start(job_id)
        self.exit(job_id, exit_code if state is not JobState.SUCCEEDED else 0)
        return self.wait_for(job_id, [state])

    def exit(self, job_id: str, code: int) -> None:
        record = self.store.get(job_id)
        assert record is not None
        self.backend.emit(EventKind.EXITED, job_id, record.job.restart_count, self.clock.now(), code)


def until(done: Callable[[], bool], what: str, why: Callable[[], str] | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {WAIT_S} s waiting for {what}" + (f" ({why()})" if why else "")
            )
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """uvicorn serving `app` on a free loopback port in a daemon thread."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class Served:
    """A Harness behind uvicorn, its controller running and its team tokens made: for CLI tests."""

    def __init__(self, tmp: Path, settings: ApiSettings | None = None, db_url: str | None = None) -> None:
        self.tmp = tmp
        self.h = Harness(tmp, settings, db_url)
        self.server = Server(self.h.app)

    def __enter__(self) -> Served:
        self.h.open()
        self.server.__enter__()
        with httpx.Client(base_url=self.server.url, timeout=30) as http:
            self.h.make_tokens(http)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)
        self.h.close()

    def cli(self, who: str | None, home: str = "home") -> Cli:
        return Cli(self.tmp / f"{home}-{who}", self.server.url, self.h.secrets[who] if who else None)


class Cli:
    """The real `corral` CLI as a subprocess against a running server, in its own CORRAL_HOME."""

    def __init__(self, home: Path, url: str, token: str | None) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        self.env.update({"CORRAL_HOME": str(home), "CORRAL_API_URL": url, "COLUMNS": "200"})
        if token is not None:
            self.env["CORRAL_TOKEN"] = token

    def __call__(
        self, *args: str | Path, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "scheduler.cli", *map(str, args)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**self.env, **(env or {})},
            timeout=60,
        )


def one_line_error(run: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """The run failed with `code` and one line on stderr holding every fragment, and no traceback."""
    assert run.returncode == code, (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
