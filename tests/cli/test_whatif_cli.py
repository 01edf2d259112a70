"""`corral whatif` through the real CLI against the real API server and controller (scripted backend)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scheduler.model.job import JobState
from tests.api.harness import Cli, Served

VOLATILE = {"run_time_s", "estimated_start", "pending_reason", "queue_position"}
TABLES = ("jobs", "allocations", "events", "audit", "tokens")


def _rows(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    """Every row, less what the controller rewrites each cycle by itself (a reason's "in about N min")."""
    cursor = conn.execute(f"SELECT * FROM {table}")
    names = [d[0] for d in cursor.description]
    keep = [i for i, n in enumerate(names) if n not in ("pending_reason", "change_seq", "updated_at")]
    return sorted((tuple(row[i] for i in keep) for row in cursor.fetchall()), key=repr)


def _store(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {t: _rows(conn, t) for t in TABLES}


@dataclass
class Live:
    """One served cluster for the module's tests: a 2-node job running in eu-west, and a job of
    ml-a and one of ml-b waiting behind it."""

    served: Served
    tmp: Path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp_path = tmp_path_factory.mktemp("whatif")
    with Served(tmp_path) as served:
        team = served.cli("a")
        blocker = team(
            "submit", "-q", "--queue", "ml-a", "-N", "2", "--gpus-per-node", "8", "--region", "eu-west",
            "--time", "1h", "--", "true",
        ).stdout.strip()  # fmt: skip
        served.h.start(blocker)
        waiting = [
            team(
                "submit", "-q", "--queue", q, "--gpus-per-node", "8", "--region", "eu-west", "--", "true"
            ).stdout.strip()
            for q in ("ml-a", "ml-b")
        ]
        for job in waiting:
            served.h.wait_for(job, [JobState.PENDING])
        yield Live(served, tmp_path)


def _jobs(admin: Cli) -> list[dict[str, Any]]:
    rows = json.loads(admin("jobs", "--all", "-o", "json").stdout)
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def test_whatif_reads_the_live_state_and_changes_nothing(live: Live) -> None:
    served, tmp_path = live.served, live.tmp
    h, admin, team = served.h, served.cli("admin"), served.cli("a")

    def jobs() -> list[dict[str, Any]]:
        return _jobs(admin)

    db = tmp_path / "corral.db"
    before_jobs, before_store, cycles = jobs(), _store(db), h.controller.cycles
    starts = list(h.backend.started)
    run = admin(
        "whatif", "--set", "queues.ml-b.quota.H100=32", "--set", "policy.backfill=false",
        "--horizon", "6h", "-o", "json", "--plot", tmp_path / "whatif.png",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert set(result) == {"baseline", "changed", "diff"}
    assert result["changed"]["settings"] == {"queues.ml-b.quota.H100": 32, "policy.backfill": False}
    assert {"ml-a", "ml-b"} <= set(result["baseline"]["queues"]) and "cluster" in result["diff"]
    assert result["baseline"]["queues"]["ml-a"]["gpu_allocation"] > 0
    assert result["baseline"]["cycle_interval_s"] == result["changed"]["cycle_interval_s"] == 60
    assert (tmp_path / "whatif.png").stat().st_size > 1000
    table = admin("whatif", "--set", "policy.backfill=false")
    assert table.returncode == 0 and "WAIT P50" in table.stdout and "ml-b" in table.stdout, table.stderr
    assert jobs() == before_jobs
    assert _store(db) == before_store
    assert h.backend.started == starts and h.backend.stopped == []
    assert h.controller.cycles >= cycles  # it kept scheduling meanwhile, undisturbed

    bad = admin("whatif", "--set", "queues.ml-c.quota.H100=8")
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: --set queues.ml-c.quota.H100: no queue 'ml-c'; the queues are default, ml-a, ml-b"
    )
    every = admin("whatif", "--set", "policy.backfill=false", "--cycle-interval", "0", "-o", "json")
    assert every.returncode == 0 and json.loads(every.stdout)["changed"]["cycle_interval_s"] == 0
    bad = admin("whatif", "--set", "policy.backfill=false", "--cycle-interval", "-1")
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: --cycle-interval: must be between 0 and 3600 seconds (got -1)"
    )
    bad = admin("whatif", "--set", "policy.backfill=perhaps")
    assert bad.returncode == 2 and bad.stderr.startswith(
        "error: --set policy.backfill: Input should be a valid boolean"
    )
    denied = team("whatif", "--set", "policy.backfill=false")
    assert denied.returncode == 4 and "only an admin" in denied.stderr


TRACE = """job_id,submit_time,duration,gpus,queue,data_region
a1,100,600,8,ml-a,cn-north
a2,160,900,8,ml-a,any
a3,220,300,16,ml-a,eu-west
b1,280,1200,8,ml-b,cn-north
d1,340,60,1,default,any
"""


def test_whatif_replays_a_trace_given_with_trace_and_changes_nothing(live: Live) -> None:
    h, admin = live.served.h, live.served.cli("admin")
    trace = live.tmp / "next-day.csv"  # Corral's trace CSV, as `corral sim` reads it
    trace.write_text(TRACE, encoding="utf-8")
    db = live.tmp / "corral.db"
    before_jobs, before_store, starts = _jobs(admin), _store(db), list(h.backend.started)
    run = admin(
        "whatif", "--set", "queues.ml-b.quota.H100=32", "--trace", trace, "--horizon", "6h", "-o", "json"
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert set(result) == {"baseline", "changed", "diff"}
    assert result["changed"]["settings"] == {"queues.ml-b.quota.H100": 32}
    # the jobs followed: each queue's waiting job (ml-a's and ml-b's) and the trace's arrivals,
    # not the last horizon's submissions (those would make ml-a 1 + 2, ml-b 1 + 1, no default)
    for side in ("baseline", "changed"):
        queues = result[side]["queues"]
        assert {q: queues[q]["jobs"] for q in queues} == {"default": 1, "ml-a": 1 + 3, "ml-b": 1 + 1}, side
        assert result[side]["cluster"]["jobs"] == 7
        assert queues["default"]["started"] == 1 and queues["default"]["finished"] == 1  # 1 GPU for 60 s
    assert set(result["diff"]["queues"]) == {"default", "ml-a", "ml-b"} and "cluster" in result["diff"]
    assert all(result["diff"]["queues"][q]["jobs"] == 0 for q in result["diff"]["queues"])
    assert _jobs(admin) == before_jobs
    assert _store(db) == before_store
    assert h.backend.started == starts and h.backend.stopped == []

    bad = live.tmp / "bad.csv"
    bad.write_text("job_id,submit_time,duration,gpus\nx,0,-5,8\n", encoding="utf-8")
    run = admin("whatif", "--set", "policy.backfill=false", "--trace", bad)
    assert run.returncode == 2 and run.stdout == "", run.stderr
    assert run.stderr.startswith(f"error: --trace: {bad}:2: duration") and len(run.stderr.splitlines()) == 1
