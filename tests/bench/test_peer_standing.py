"""Where Corral stands against the published Tiresias simulator on its own input (README, "Against
Tiresias on its own input"), kept from slipping: the whole 3,000-job input, under the peer's GPU
counting. `fifo` must reproduce the peer's `fifo` figure to the second (both simulators model the
same input the same way), and `corral`, paying real preemption costs, must stay at or below
Tiresias-L, which pays none."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.timeout(300)
def test_fifo_matches_the_peer_and_corral_with_real_costs_beats_tiresias_l() -> None:
    proc = subprocess.run(
        [
            sys.executable, str(BENCH / "peer.py"), "--policies", "fifo,corral", "--costs", "default",
            "--placement", "gpu-count", "--json",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    runs = {run["policy"]: run for run in data["runs"]}
    assert all(run["jobs"] == 3000 and run["rejected"] == 0 for run in runs.values())
    assert runs["fifo"]["avg_jct_s"] == pytest.approx(data["peer"]["fifo"], abs=0.5)
    assert runs["corral"]["avg_jct_s"] <= data["peer"]["Tiresias-L (dlas-gpu)"], runs["corral"]
