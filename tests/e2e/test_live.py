"""End to end: the real CLI → the real API → the controller → a real local Ray cluster.

Every test leaves the cluster idle (its jobs finished or cancelled) for the next one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.conftest import ADMIN, TEAM_A, TEAM_B, TERMINAL, Corral, placement_groups

pytestmark = [pytest.mark.xdist_group("e2e"), pytest.mark.timeout(600)]

TRAIN = "python3 examples/jobs/checkpoint_train.py"


def _history_kinds(job: dict[str, object]) -> list[str]:
    return [str(e["kind"]) for e in job["history"]]  # type: ignore[union-attr, index]


def _log(corral: Corral, job_id: str) -> str:
    return corral.run("logs", job_id).stdout


def test_status_reports_everything_up(corral: Corral) -> None:
    status = corral.status()
    assert status["api_url"].startswith("http://127.0.0.1:")
    assert status["metrics_url"]
    assert status["ray"]["state"] == "up"
    assert status["controller"]["state"] == "ok"
    assert status["api"]["state"] == "up"
    nodes = json.loads(corral.run("nodes", "-o", "json").stdout)
    assert sorted(n["id"] for n in nodes) == ["cn-east-r1-n00", "cn-north-r1-n00", "cn-north-r1-n01"]
    metrics = httpx.get(status["metrics_url"], timeout=10).text  # Prometheus scrapes it without a token
    assert 'corral_gpus{gpu_type="H100",region="cn-north",state="total"} 16.0' in metrics
    assert "corral_leader 1.0" in metrics


def test_one_gpu_job_runs_and_its_log_is_followed(corral: Corral) -> None:
    job_id = corral.submit(
        "--gpus", "1", "--name", "hello", "--", "sh", "-c", "echo hello; sleep 1; echo done"
    )
    follow = corral.run("logs", job_id, "-f", timeout=60)
    assert "hello" in follow.stdout and "done" in follow.stdout
    job = corral.wait_for(job_id, ["SUCCEEDED"], timeout=30)
    assert job["exit_code"] == 0
    kinds = _history_kinds(job)
    for kind in ("SUBMITTED", "PLACED", "STARTED", "SUCCEEDED"):
        assert kind in kinds


def test_failed_job_exits_one_with_wait(corral: Corral) -> None:
    proc = corral.run("submit", "--gpus", "1", "--wait", "--", "sh", "-c", "exit 3", check=False, timeout=60)
    assert proc.returncode == 1, proc.stderr
    job_id = proc.stdout.strip().splitlines()[0]
    assert corral.describe(job_id)["exit_code"] == 3


def test_gang_job_gets_rank_world_size_and_master_on_both_nodes(corral: Corral) -> None:
    cmd = (
        'echo "RANK=$RANK WORLD_SIZE=$WORLD_SIZE MASTER=$MASTER_ADDR:$MASTER_PORT JOB=$CORRAL_JOB_ID"; '
        'echo "GPUS=$CUDA_VISIBLE_DEVICES"'
    )
    job_id = corral.submit(
        "--nodes", "2", "--gpus-per-node", "8", "--region", "cn-north", "--", "sh", "-c", cmd
    )
    job = corral.wait_for(job_id, ["SUCCEEDED"], timeout=60)
    assert sorted(a["node"] for a in job["allocation"] or []) in ([], ["cn-north-r1-n00", "cn-north-r1-n01"])
    log = _log(corral, job_id)
    ranks = dict(re.findall(r"RANK=(\d) WORLD_SIZE=2 MASTER=(\S+) JOB=" + job_id, log))
    assert set(ranks) == {"0", "1"}, log
    assert ranks["0"] == ranks["1"] and re.fullmatch(r"[\d.]+:\d+", ranks["0"]), ranks
    gpus = re.findall(r"GPUS=(\S+)", log)
    assert len(gpus) == 2 and all(len(g.split(",")) == 8 for g in gpus), log


def test_high_priority_preempts_low_which_checkpoints_and_resumes(corral: Corral) -> None:
    low = corral.submit(
        "--nodes", "2", "--gpus-per-node", "8", "--region", "cn-north", "--priority", "low",
        "--grace", "10", "--name", "low-train", "--", *TRAIN.split(), "--steps", "40", "--step-s", "0.25",
    )  # fmt: skip
    corral.wait_for(low, ["RUNNING"], timeout=60)
    time.sleep(2.0)  # let it make progress worth checkpointing
    high = corral.submit(
        "--nodes", "1", "--gpus-per-node", "8", "--region", "cn-north", "--priority", "high",
        "--name", "urgent", "--", "sleep", "2",
    )  # fmt: skip
    corral.wait_for(high, ["RUNNING", "SUCCEEDED"], timeout=30)
    preempted = corral.describe(low)
    assert "PREEMPTING" in _history_kinds(preempted)
    corral.wait_for(high, ["SUCCEEDED"], timeout=30)
    done = corral.wait_for(low, ["SUCCEEDED"], timeout=90)
    assert done["restart_count"] == 1 and done["preemption_count"] == 1
    log = _log(corral, low)
    # Each rank keeps its own checkpoint: each resumes exactly where it saved on SIGTERM.
    saved = {r: int(n) for r, n in re.findall(r"\[rank (\d)\] SIGTERM: checkpoint saved at step (\d+)", log)}
    resumed = {r: int(n) for r, n in re.findall(r"\[rank (\d)\] resumed from checkpoint at step (\d+)", log)}
    assert set(saved) == {"0", "1"} and all(step > 0 for step in saved.values()), log
    assert resumed == saved, log
    kinds = _history_kinds(done)
    assert kinds.count("REQUEUED") == 1  # requeued exactly once per preemption


def test_node_removed_from_ray_requeues_its_job(corral: Corral) -> None:
    from scheduler.config.live import load_live_config
    from scheduler.local.ray_cluster import LocalRayCluster

    job_id = corral.submit("--gpus", "8", "--region", "cn-east", "--", "sleep", "600")
    corral.wait_for(job_id, ["RUNNING"], timeout=60)
    state = json.loads((corral.home / "local.json").read_text())
    cluster = LocalRayCluster(Path(state["ray_root"]))
    cluster.kill_node("cn-east-r1-n00")
    job = corral.wait_for(job_id, ["PENDING"], timeout=60)
    assert job["restart_count"] == 1
    assert "NODE_FAIL" in _history_kinds(job)
    nodes = {n["id"]: n for n in json.loads(corral.run("nodes", "-o", "json").stdout)}
    assert "cn-east-r1-n00" not in nodes or nodes["cn-east-r1-n00"]["state"] == "down"
    # The node comes back: the job runs again, under a new attempt.
    east = next(
        n
        for n in load_live_config(Path(__file__).parent / "cluster.yaml").cluster.nodes
        if n.region == "cn-east"
    )
    cluster.add_node(east)
    corral.wait_for(job_id, ["RUNNING"], timeout=90)
    corral.run("cancel", job_id, "--grace", "0")
    corral.wait_for(job_id, ["CANCELLED"], timeout=30)


def test_team_cannot_see_or_cancel_another_teams_job(corral: Corral) -> None:
    job_id = corral.submit("--gpus", "1", "--", "sleep", "30", token=TEAM_A)
    other = corral.run("describe", job_id, token=TEAM_B, check=False)
    assert other.returncode == 3 and job_id in other.stderr
    cancel = corral.run("cancel", job_id, token=TEAM_B, check=False)
    assert cancel.returncode == 3
    listed = json.loads(corral.run("jobs", "--all", "-o", "json", token=TEAM_B).stdout)
    assert job_id not in {j["id"] for j in listed}
    assert corral.describe(job_id, token=TEAM_A)["state"] not in TERMINAL
    wrong = corral.run("jobs", token="not-a-token", check=False)
    assert wrong.returncode == 4 and "token" in wrong.stderr
    corral.run("cancel", job_id, "--grace", "0", token=TEAM_A)
    assert corral.wait_for(job_id, ["CANCELLED"], token=TEAM_A)["state"] == "CANCELLED"
    assert corral.describe(job_id, token=ADMIN)["state"] == "CANCELLED"  # admins see every team


@pytest.mark.parametrize(
    ("args", "field", "code"),
    [
        (("--gpus", "0"), "gpus", 2),
        (("--nodes", "100000", "--gpus-per-node", "8"), "nodes", 2),
        (("--gpus", "1", "--queue", "nope"), "queue", 2),
        (("--gpus", "1", "--gpu-type", "TPUv9"), "gpu_type", 2),
        (("--gpus", "1", "--region", "mars-1"), "data_region", 2),
    ],
)
def test_bad_submissions_are_refused_with_the_field_named(
    corral: Corral, args: tuple[str, ...], field: str, code: int
) -> None:
    before = json.loads(corral.run("jobs", "--all", "-o", "json").stdout)
    proc = corral.run("submit", *args, "--", "true", check=False)
    assert proc.returncode == code, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and field.replace("_", "") in lines[0].replace("_", "").replace("-", ""), (
        proc.stderr
    )
    after = json.loads(corral.run("jobs", "--all", "-o", "json").stdout)
    assert len(after) == len(before)


def test_unknown_job_is_not_found(corral: Corral) -> None:
    proc = corral.run("describe", "999999", check=False)
    assert proc.returncode == 3 and "999999" in proc.stderr


def test_controller_kill_9_loses_nothing_and_starts_nothing_twice(corral: Corral) -> None:
    running = corral.submit("--gpus", "8", "--region", "cn-north", "--name", "survivor", "--", *TRAIN.split(),
                            "--steps", "40", "--step-s", "0.25")  # fmt: skip
    corral.wait_for(running, ["RUNNING"], timeout=60)
    waiting = [
        corral.submit("--nodes", "2", "--gpus-per-node", "8", "--region", "cn-north", "--", "sleep", "1")
        for _ in range(3)
    ]
    state = json.loads((corral.home / "local.json").read_text())
    os.kill(int(state["pid"]), signal.SIGKILL)
    psutil.Process(int(state["pid"])).wait(10) if psutil.pid_exists(int(state["pid"])) else None
    assert corral.run("jobs", check=False).returncode == 5  # the API is gone with the controller
    corral.run("up", timeout=180)  # restarts the controller against the same store and Ray cluster
    survivor = corral.describe(running)
    assert survivor["state"] in ("RUNNING", "SUCCEEDED") and survivor["restart_count"] == 0
    for job_id in waiting:
        assert corral.describe(job_id)["state"] in ("PENDING", "STARTING", "RUNNING", "SUCCEEDED")
    final = corral.wait_for(running, ["SUCCEEDED"], timeout=60)
    assert final["restart_count"] == 0
    assert _log(corral, running).count("start: step 0") == 1  # adopted, never started twice
    for job_id in waiting:
        corral.wait_for(job_id, ["SUCCEEDED"], timeout=90)
    new_state = json.loads((corral.home / "local.json").read_text())
    deadline = time.monotonic() + 20
    while (groups := placement_groups(new_state["ray_address"])) and time.monotonic() < deadline:
        time.sleep(1)
    assert groups == [], groups  # every finished job's placement group is gone; no orphans


def test_a_job_past_its_time_limit_is_stopped_as_timeout(corral: Corral) -> None:
    job_id = corral.submit("--gpus", "1", "--time", "3s", "--grace", "1", "--", "sleep", "600")
    job = corral.wait_for(job_id, ["TIMEOUT"], timeout=60)
    assert "TIMEOUT_REACHED" in _history_kinds(job) and job["allocation"] is None
