"""A real API over a real SQLite store, with a small controller on the real policy, for the API and
CLI tests.

    tokens: tok-a → team ml-a, tok-b → team ml-b, tok-admin → team ops (admin)
    cluster: cn-north 2×8 H100 + 1×8 A100, eu-west 2×8 H100; queues ml-a, ml-b, default
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from scheduler.api.app import create_app
from scheduler.api.auth import TokenTable
from scheduler.clock import WallClock
from scheduler.control.spec_check import check_spec
from scheduler.control.view import ClusterView, DryRun, NodeStatus, QueueStatus
from scheduler.model.job import Job, JobSpec, JobState
from scheduler.model.plan import Allocation, NodeAllocation, Place, Reject
from scheduler.model.queue import ClusterConfig
from scheduler.model.snapshot import ClusterSnapshot, RunningJob
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from scheduler.sim.cluster_file import parse_cluster
from scheduler.store.records import Batch, JobRecord
from scheduler.store.store import Store

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

TOKENS_YAML = """
tokens:
  - {token: tok-a, team: ml-a}
  - {token: tok-b, team: ml-b}
  - {token: tok-admin, team: ops, admin: true}
  - {token: tok-vision, team: vision, queues: [ml-b]}
"""

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {"a": "tok-a", "b": "tok-b", "admin": "tok-admin", "vision": "tok-vision"}
HOLDING = (JobState.STARTING, JobState.RUNNING, JobState.PREEMPTING)


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


class FakeController:
    """A ControllerHandle over the store and the real policy (no backend: jobs move by `run`)."""

    def __init__(self, store: Store, cluster: ClusterConfig) -> None:
        self.store = store
        self.cluster = cluster
        self.policy = PolicyConfig()
        self.wakes = 0

    def _running(self) -> list[RunningJob]:
        out = []
        nodes = {n.id: n for n in self.cluster.nodes}
        for r in self.store.jobs(states=HOLDING):
            if r.allocation is not None:
                first = nodes[r.allocation.nodes[0].node]
                out.append(RunningJob(r.job, r.allocation, first.pool, r.job.started_at or 0.0))
        return out

    def _snapshot(self, pending: list[Job]) -> ClusterSnapshot:
        c = self.cluster
        return ClusterSnapshot.build(c.nodes, c.queues, c.priority_classes, pending, self._running())

    def view(self) -> ClusterView:
        records = self.store.jobs(states=[JobState.PENDING, *HOLDING])
        used: dict[str, int] = {}
        on_node: dict[str, list[str]] = {}
        per_queue: dict[str, dict[str, int]] = {}
        nodes = {n.id: n for n in self.cluster.nodes}
        for r in records:
            if r.allocation is None:
                continue
            for n in r.allocation.nodes:
                used[n.node] = used.get(n.node, 0) + len(n.gpus)
                on_node.setdefault(n.node, []).append(r.id)
                q = per_queue.setdefault(r.job.spec.queue, {})
                gpu_type = nodes[n.node].gpu_type
                q[gpu_type] = q.get(gpu_type, 0) + len(n.gpus)
        pending = [r for r in records if r.state is JobState.PENDING]
        queues = [
            QueueStatus(
                queue=q,
                used=per_queue.get(q.name, {}),
                borrowed=max(0, sum(per_queue.get(q.name, {}).values()) - sum(q.quota.values())),
                pending=sum(1 for r in pending if r.job.spec.queue == q.name),
                running=sum(1 for r in records if r.allocation and r.job.spec.queue == q.name),
            )
            for q in self.cluster.queues
        ]
        return ClusterView(
            nodes=[
                NodeStatus(n, used.get(n.id, 0), tuple(on_node.get(n.id, ()))) for n in self.cluster.nodes
            ],
            queues=queues,
            priority_classes=self.cluster.priority_classes,
            time=time.time(),
            queue_positions={r.id: i + 1 for i, r in enumerate(pending)},
        )

    def check_spec(self, spec: JobSpec) -> JobSpec:
        check_spec(spec, self.cluster.nodes, self.cluster.queues, self.cluster.priority_classes)
        return spec

    def dry_run(self, spec: JobSpec, team: str) -> DryRun:
        probe = Job(id="dry-run", spec=spec, team=team, submitted_at=time.time())
        plan = decide(self._snapshot([probe]), self.policy, time.time())
        for d in plan.decisions:
            if isinstance(d, Place) and d.job_id == probe.id:
                return DryRun(allocation=d.allocation, pending_reason=None)
            if isinstance(d, Reject) and d.job_id == probe.id:
                return DryRun(allocation=None, pending_reason=None, rejected=d.reason)
        return DryRun(allocation=None, pending_reason=plan.reason_for(probe.id).message)

    def wake(self) -> None:
        self.wakes += 1

    def health(self) -> Mapping[str, str]:
        return {"controller": "ok", "store": "ok"}


def build(tmp: Path) -> tuple[FastAPI, Store, FakeController, Path]:
    """(app, store, controller, log_dir) in the folder `tmp`."""
    cluster = parse_cluster(CLUSTER_YAML)
    store = Store.open(f"sqlite:///{tmp / 'corral.db'}")
    store.sync_queues(list(cluster.queues))
    (tmp / "tokens.yaml").write_text(TOKENS_YAML)
    tokens = TokenTable.load(tmp / "tokens.yaml")
    log_dir = tmp / "logs"
    log_dir.mkdir()
    controller = FakeController(store, cluster)
    return create_app(store, controller, tokens, log_dir, WallClock()), store, controller, log_dir


def start(store: Store, job_id: str, nodes: Mapping[str, tuple[int, ...]]) -> JobRecord:
    """Move a PENDING job to RUNNING on `nodes` (what the controller would do)."""
    record = store.get(job_id)
    assert record is not None
    allocation = Allocation(nodes=tuple(NodeAllocation(node=n, gpus=g) for n, g in nodes.items()))
    now = time.time()
    job = record.job.transition(JobState.STARTING, started_at=now).transition(JobState.RUNNING)
    new = JobRecord(job=job, allocation=allocation, updated_at=now)
    store.apply(Batch(updates=[new]))
    return new


def finish(store: Store, job_id: str, state: JobState = JobState.SUCCEEDED, exit_code: int = 0) -> None:
    record = store.get(job_id)
    assert record is not None
    now = time.time()
    # straight to the end state (the lifecycle table is the controller's business, not these tests')
    changes = {
        "state": state,
        "finished_at": now,
        "exit_code": exit_code,
        "started_at": record.job.started_at or now,
    }
    job = record.job.model_copy(update=changes)
    store.apply(Batch(updates=[JobRecord(job=job, updated_at=now)]))


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
