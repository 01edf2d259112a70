"""`corral whatif` through the real CLI against the real API server and controller (scripted backend)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from scheduler.model.job import JobState
from tests.api.harness import Served

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


def test_whatif_reads_the_live_state_and_changes_nothing(tmp_path: Path) -> None:
    with Served(tmp_path) as served:
        h, admin, team = served.h, served.cli("admin"), served.cli("a")
        blocker = team(
            "submit", "-q", "--queue", "ml-a", "-N", "2", "--gpus-per-node", "8", "--region", "eu-west",
            "--time", "1h", "--", "true",
        ).stdout.strip()  # fmt: skip
        h.start(blocker)
        waiting = [
            team(
                "submit", "-q", "--queue", q, "--gpus-per-node", "8", "--region", "eu-west", "--", "true"
            ).stdout.strip()
            for q in ("ml-a", "ml-b")
        ]
        for job in waiting:
            h.wait_for(job, [JobState.PENDING])

        def jobs() -> list[dict[str, Any]]:
            rows = json.loads(admin("jobs", "--all", "-o", "json").stdout)
            return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]

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
