"""The bench scripts run end to end at tiny sizes and print the JSON they promise."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(script: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert isinstance(data, dict)
    return data


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


@pytest.mark.timeout(60)
def test_cycle_bench_json() -> None:
    data = _run(
        "cycle.py",
        *("--nodes", "128", "--pending", "300", "--queues", "6", "--repeat", "2"),
        *("--growth-nodes", "64,128", "--growth-pending", "100,300"),
        *("--growth-fixed-nodes", "128", "--growth-fixed-pending", "300"),
    )
    for key in ("full_cycle_s", "arrival_cycle_s", "completion_cycle_s", "snapshot_build_s"):
        assert _positive(data[key]), (key, data[key])
    assert (data["nodes"], data["pending"], data["queues"]) == (128, 300, 6)
    assert data["gpus"] == 128 * 8
    assert 0.8 <= data["allocated_fraction"] <= 0.9
    growth = data["growth"]
    for axis, sizes in (("nodes", [64, 128]), ("pending", [100, 300])):
        assert [n for n, _ in growth[axis]] == sizes
        assert all(_positive(s) for _, s in growth[axis])
        assert isinstance(growth[f"{axis}_exponent"], float)


@pytest.mark.timeout(60)
def test_cycle_bench_no_growth() -> None:
    data = _run(
        "cycle.py", "--nodes", "64", "--pending", "50", "--queues", "3", "--repeat", "1", "--no-growth"
    )
    assert "growth" not in data
    assert _positive(data["full_cycle_s"])


@pytest.mark.timeout(60)
def test_sim_bench_json() -> None:
    data = _run("sim.py", "--jobs", "300", "--gpus", "512", "--contended-jobs", "200")
    for key in ("wall_s", "cycles", "avg_jct_s", "gpu_allocation_rate"):
        assert _positive(data[key]), (key, data[key])
    assert (data["contended_philly_jobs"], data["contended_philly_gpus"]) == (200, 448)
    for key in ("contended_philly_corral_s", "contended_philly_las_s"):
        assert _positive(data[key]), (key, data[key])
    assert (data["jobs"], data["gpus"], data["policy"]) == (300, 512, "corral")
    assert data["finished"] + data["rejected"] == 300
    assert data["offered_load"] == pytest.approx(0.9)


@pytest.mark.timeout(120)
def test_peer_bench_json(tmp_path: Path) -> None:
    trace = tmp_path / "peer.csv"
    data = _run(
        "peer.py", "--jobs", "40", "--policies", "las", "--costs", "cheap", "--placement", "gpu-count",
        "--trace-out", str(trace),
    )  # fmt: skip
    assert data["input"] == {"jobs": 40, "gpus": 128}
    assert data["peer"]["Tiresias-L (dlas-gpu)"] == 90_047.0
    (run,) = data["runs"]
    assert (run["policy"], run["costs"], run["placement"], run["jobs"]) == ("las", "cheap", "gpu-count", 40)
    assert _positive(run["avg_jct_s"]) and run["vs_tiresias_l"] == pytest.approx(run["avg_jct_s"] / 90_047.0)
    header, *rows = trace.read_text().splitlines()
    assert header == "job_id,submit_time,duration,gpus,queue,nodes,gpus_per_node" and len(rows) == 40
    assert rows[0].split(",")[1] == "0"  # the first arrival at 0
