"""Start-time estimates through the API and the real CLI, from a forecaster beside the controller."""

from __future__ import annotations

import json
import re
from pathlib import Path

from scheduler.forecast.live import attach_forecaster
from tests.api.harness import Served, until

H = 3600


def test_a_pending_job_shows_its_estimated_start_in_json_describe_and_wide(tmp_path: Path) -> None:
    with Served(tmp_path) as served:
        h = served.h
        forecaster = attach_forecaster(h.controller, h.store, h.config, interval_s=0.05)
        forecaster.start()  # the controller already runs; it stops its helpers when it stops
        cli = served.cli("a")
        blocker = cli(
            "submit", "-q", "--queue", "ml-a", "-N", "2", "--gpus-per-node", "8", "--region", "eu-west",
            "--time", "1h", "--", "true",
        ).stdout.strip()  # fmt: skip
        started = h.start(blocker).job.started_at
        assert started is not None
        waiting = cli(
            "submit", "-q", "--queue", "ml-a", "--gpus-per-node", "8", "--region", "eu-west", "--time", "1h",
            "--", "true",
        ).stdout.strip()  # fmt: skip

        def estimated() -> float | None:
            out = json.loads(cli("describe", waiting, "-o", "json").stdout)
            return out.get("estimated_start")

        # polled in the controller's view, not through a CLI process every 10 ms (a CPU-second each)
        until(lambda: h.controller.view().estimated_starts.get(waiting) is not None, "an estimate")
        estimate = estimated()
        # It starts when the blocker ends by its time limit at the latest (sooner if the policy's
        # service preemption makes room first), never before it was submitted.
        assert estimate is not None and started - 1 <= estimate <= started + H + 60
        running = json.loads(cli("describe", blocker, "-o", "json").stdout)
        assert running["estimated_start"] is None  # only pending jobs have one
        wide = cli("jobs", "-o", "wide")
        assert wide.returncode == 0, wide.stderr
        header, *rows = wide.stdout.splitlines()
        assert header.split() == [
            "ID",
            "NAME",
            "QUEUE",
            "STATE",
            "GPUS",
            "NODES",
            "TIME",
            "PRIORITY",
            "START",
            "REASON",
        ]
        row = next(r for r in rows if r.split()[0] == waiting)
        assert "N/A" not in row and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row), row
        assert "Estimated start" in cli("describe", waiting).stdout
        listed = json.loads(cli("jobs", "-o", "json").stdout)
        assert {j["id"]: j["estimated_start"] is not None for j in listed} == {blocker: False, waiting: True}
