"""The forecast benches (start-time estimate error, what-if speed) run end to end at tiny sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(script: str, *args: str) -> Any:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout[: proc.stdout.rindex("}") + 1])


@pytest.mark.timeout(240)
def test_estimates_bench_reports_the_error_of_each_estimator() -> None:
    data = _run("estimates.py", "--only", "tiresias", "--samples", "6", "--json")
    row = data["tiresias"]
    assert row["sampled"] == 6
    for name in ("corral", "corral, learned", "time limits only"):
        assert set(row[name]["all"]) == {"jobs", "coverage", "median_abs_error_s", "p90_abs_error_s"}
    assert row["corral"]["all"]["coverage"] == 1.0


@pytest.mark.timeout(240)
def test_whatif_bench_times_both_replays() -> None:
    data = _run("whatif.py", "--pending", "40", "--horizon-h", "1")
    assert data["pending"] == 40 and data["whatif_total_s"] > 0
    assert data["baseline_replay_s"] > 0 and data["changed_replay_s"] > 0
