"""The live path on a real local Ray cluster: latency of a start, of a preemption, and submissions/s.

    .venv/bin/python bench/live.py [--json] [--starts 20] [--grace 5] [--submissions 2000]
                                   [--clients 16] [--no-postgres]

Each phase runs against the real thing: `corral up` in a fresh CORRAL_HOME (a local Ray cluster of
4 simulated 8-GPU nodes, the controller and the API, SQLite), driven over HTTP with httpx.

  (a) start_latency_s: on the idle cluster, submit a 1-GPU job and poll GET /v1/jobs/{id} every
      10 ms until it is RUNNING (the worker process was launched); --starts times, one at a time.
  (b) preemption_latency_s: fill every GPU with low-priority jobs that IGNORE SIGTERM (worst case:
      the whole grace period is used, then SIGKILL), submit one high-priority 8-GPU job and time it
      from the submit to its RUNNING. Target: ≤ grace + 2 s.
  (c) submissions_per_s: --clients threads (in --client-processes processes, default 1), each with
      its own HTTP connection, POST
      --submissions 1-GPU low-priority jobs (each durably committed before the 201 comes back)
      while every GPU is held, so they all wait and the controller keeps scheduling the growing
      queue meanwhile. Measured on SQLite, then again on a throwaway PostgreSQL server.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from scheduler.config import resolve_policy

REPO = Path(__file__).resolve().parents[1]


class Local:
    """One `corral up` installation in its own CORRAL_HOME."""

    def __init__(self, home: Path, db: str | None) -> None:
        self.home = home
        self.env = {**os.environ, "CORRAL_HOME": str(home), "RAY_AUTH_MODE": "disabled"}
        args = ["up", "--nodes", "4", "--regions", "cn-north", "--racks", "2"]
        if db:
            args += ["--db", db]
        self._corral(*args)
        ctx = json.loads(self._corral("status", "-o", "json", check=False).stdout)
        token = (home / "context.yaml").read_text().split("token:", 1)[1].strip().strip("'\"")
        self.client = httpx.Client(
            base_url=ctx["api_url"], headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.api_url = ctx["api_url"]
        self.token = token

    def _corral(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", *args],
            env=self.env, cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise RuntimeError(f"corral {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def down(self) -> None:
        self.client.close()
        self._corral("down", check=False)

    def submit(self, spec: dict[str, Any]) -> str:
        r = self.client.post("/v1/jobs", json=spec)
        r.raise_for_status()
        return str(r.json()["id"])

    def state(self, job_id: str) -> str:
        return str(self.client.get(f"/v1/jobs/{job_id}").json()["state"])

    def wait(self, job_id: str, states: set[str], timeout: float = 120, poll_s: float = 0.01) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.state(job_id) in states:
                return time.perf_counter()
            time.sleep(poll_s)
        raise TimeoutError(f"job {job_id} never reached {states}")

    def unfinished(self) -> list[dict[str, Any]]:
        """Every unfinished job, page by page (the API returns at most 1,000 at a time)."""
        jobs: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 1000}
        while True:
            r = self.client.get("/v1/jobs", params=params)
            jobs += r.json()
            cursor = r.headers.get("X-Next-Cursor")
            if not cursor:
                return jobs
            params["after"] = cursor

    def cancel_all(self) -> None:
        for job in self.unfinished():
            self.client.post(f"/v1/jobs/{job['id']}/cancel", json={"grace_s": 0})
        deadline = time.time() + 60
        while self.unfinished() and time.time() < deadline:
            time.sleep(0.2)


@contextmanager
def local(db: str | None = None) -> Iterator[Local]:
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as home:
        inst = Local(Path(home), db)
        try:
            yield inst
        finally:
            inst.down()


def start_latency(inst: Local, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        job_id = inst.submit({"name": f"start-{i}", "gpus_per_node": 1, "command": "sleep 0.2"})
        out.append(inst.wait(job_id, {"RUNNING", "SUCCEEDED"}) - t0)
        inst.wait(job_id, {"SUCCEEDED"})
    return out


def fill(inst: Local, grace: float) -> list[str]:
    ids = [
        inst.submit(
            {
                "name": f"filler-{i}",
                "priority": "low",
                "gpus_per_node": 8,
                "grace_period_s": grace,
                "command": "trap '' TERM; sleep 600",
            }
        )
        for i in range(4)
    ]
    for job_id in ids:
        inst.wait(job_id, {"RUNNING"})
    return ids


def preemption_latency(inst: Local, grace: float, protected_s: float) -> float:
    fill(inst, grace)
    # A new start is protected from preemption for the policy's default_min_runtime_s (anti-churn);
    # wait past it, so what is timed is the preemption itself.
    time.sleep(protected_s + 1.0)
    t0 = time.perf_counter()
    job_id = inst.submit({"name": "urgent", "priority": "high", "gpus_per_node": 8, "command": "sleep 1"})
    latency = inst.wait(job_id, {"RUNNING", "SUCCEEDED"}, poll_s=0.02) - t0
    inst.cancel_all()
    return latency


def _client_process(api_url: str, token: str, tag: str, threads: int, count: int, start: Any) -> list[str]:
    """One load-generating process: `threads` connections posting `count` submissions each."""
    errors: list[str] = []

    def work(c: int) -> None:
        with httpx.Client(
            base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            for i in range(count):
                spec = {"name": f"s{tag}-{c}-{i}", "priority": "low", "gpus_per_node": 1, "command": "true"}
                r = client.post("/v1/jobs", json=spec)
                if r.status_code != 201:
                    errors.append(r.text)

    pool = [threading.Thread(target=work, args=(c,)) for c in range(threads)]
    start.wait()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return errors


def submissions_per_s(inst: Local, total: int, clients: int, processes: int = 1) -> float:
    """The load generator runs in its own process(es) and shares the 2 cores with the server: one
    process with 16 threads measured best here (more processes take CPU from the server)."""
    blocker = inst.submit({"name": "blocker", "priority": "high", "nodes": 4, "gpus_per_node": 8,
                           "data_region": "cn-north", "command": "sleep 600"})  # fmt: skip
    inst.wait(blocker, {"RUNNING"})
    threads = max(1, clients // processes)
    count = max(1, total // (threads * processes))
    with multiprocessing.Manager() as manager, ProcessPoolExecutor(processes) as pool:
        start = manager.Event()
        futures = [
            pool.submit(_client_process, inst.api_url, inst.token, str(p), threads, count, start)
            for p in range(processes)
        ]
        time.sleep(1.0)  # let every process get to start.wait()
        t0 = time.perf_counter()
        start.set()
        errors = [e for f in futures for e in f.result()]
        elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} submissions failed: {errors[0]}")
    return threads * processes * count / elapsed


def _policy_section(home: Path) -> dict[str, Any]:
    data = yaml.safe_load((home / "cluster.yaml").read_text()) or {}
    return dict(data.get("policy") or {})


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
        "max": round(ordered[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--starts", type=int, default=20)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--submissions", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="SQLite submission runs (median)")
    parser.add_argument("--phases", default="start,preempt,submit", help="comma-separated subset")
    args = parser.parse_args()
    phases = set(args.phases.split(","))

    result: dict[str, Any] = {"cpus": os.cpu_count()}
    with local() as inst:
        if "start" in phases:
            result["start_latency_s"] = summary(start_latency(inst, args.starts))
        if "preempt" in phases:
            protected = resolve_policy(_policy_section(inst.home), str(inst.home)).default_min_runtime_s
            result["preemption_latency_s"] = round(preemption_latency(inst, args.grace, protected), 3)
            result["preemption_grace_s"] = args.grace
    if "submit" in phases:
        # Each run on a fresh install (what earlier phases left running does not count); the
        # figure varies with what else the 2 cores do, so it is the median of --repeat runs.
        runs = []
        for _ in range(args.repeat):
            with local() as inst:
                runs.append(submissions_per_s(inst, args.submissions, args.clients, args.client_processes))
        result["submissions_per_s_sqlite"] = round(statistics.median(runs), 1)
        result["submissions_per_s_sqlite_runs"] = [round(r, 1) for r in runs]
    if "submit" in phases and not args.no_postgres:
        from scheduler.store.local_postgres import LocalPostgres

        with LocalPostgres.start() as pg, local(pg.create_database("corral_bench")) as inst:
            result["submissions_per_s_postgresql"] = round(
                submissions_per_s(inst, args.submissions, args.clients, args.client_processes), 1
            )
    result["targets"] = {"start_p50_s": 1.0, "preemption_s": args.grace + 2.0, "submissions_per_s": 500}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
