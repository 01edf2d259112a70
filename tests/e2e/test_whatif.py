"""`corral whatif` against the real local Corral: it reads the live state, changes nothing."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Corral, placement_groups

pytestmark = [pytest.mark.xdist_group("e2e"), pytest.mark.timeout(600)]

VOLATILE = {"run_time_s", "estimated_start", "pending_reason", "queue_position"}  # recomputed each cycle
TABLES = ("jobs", "allocations", "events", "audit")  # what a job's life writes


def _jobs(corral: Corral) -> list[dict[str, Any]]:
    rows = json.loads(corral.run("jobs", "--all", "-o", "json").stdout)
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]


def _rows(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    """Every row, less what the controller rewrites each cycle by itself (a reason's "in about N min")."""
    cursor = conn.execute(f"SELECT * FROM {table}")
    names = [d[0] for d in cursor.description]
    keep = [i for i, n in enumerate(names) if n not in ("pending_reason", "change_seq", "updated_at")]
    return sorted((tuple(row[i] for i in keep) for row in cursor.fetchall()), key=repr)


def _store(home: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(f"file:{home / 'corral.db'}?mode=ro", uri=True) as db:
        return {t: _rows(db, t) for t in TABLES}


def test_whatif_on_the_live_cluster_changes_no_job_and_nothing_in_the_store(corral: Corral) -> None:
    # Not preemptible (the admin may protect it): the waiting job must not take its node meanwhile.
    spec = corral.cwd / "whatif-blocker.yaml"
    spec.write_text(
        "gpus_per_node: 8\ndata_region: cn-east\ntime_limit_s: 3600\npreemptible: false\ncommand: sleep 600\n"
    )
    running = corral.submit(str(spec))
    corral.wait_for(running, ["RUNNING"], timeout=60)
    waiting = corral.submit(
        "--gpus-per-node", "8", "--region", "cn-east", "--time", "1h", "--", "sleep", "600"
    )
    try:
        time.sleep(1.0)  # let the controller's cycle after the submission settle
        before_jobs, before_store = _jobs(corral), _store(corral.home)
        address = json.loads((corral.home / "local.json").read_text())["ray_address"]
        groups = placement_groups(address)
        out = corral.run(
            "whatif", "--set", "queues.default.quota.H100=8", "--set", "policy.backfill=false",
            "--horizon", "2h", "-o", "json", "--plot", str(corral.home / "whatif.png"),
        )  # fmt: skip
        result = json.loads(out.stdout)
        assert set(result) == {"baseline", "changed", "diff"}
        assert result["changed"]["settings"] == {"queues.default.quota.H100": 8, "policy.backfill": False}
        default = result["baseline"]["queues"]["default"]
        assert default["jobs"] >= 1 and default["gpu_allocation"] > 0
        assert (corral.home / "whatif.png").stat().st_size > 0
        table = corral.run("whatif", "--set", "policy.backfill=false", "--horizon", "1h")
        assert "WAIT P50" in table.stdout and "(cluster)" in table.stdout
        bad = corral.run("whatif", "--set", "queues.nope.weight=2", check=False)
        assert bad.returncode == 2 and bad.stderr.strip().startswith(
            "error: --set queues.nope.weight: no queue"
        )
        assert _jobs(corral) == before_jobs
        assert _store(corral.home) == before_store
        assert placement_groups(address) == groups
        assert corral.describe(waiting)["state"] == "PENDING"
    finally:
        for job in (waiting, running):
            corral.run("cancel", job, "--grace", "0", check=False)
        for job in (waiting, running):
            corral.wait_for(job, ["CANCELLED"], timeout=60)
