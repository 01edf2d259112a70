"""End to end, what wedged or leaked before the hardening: a job that cannot start, a job that asks
for the scheduler's own variables, ids with leading zeros, reasons with raw epochs, a job reading
the controller's secrets, a non-preemptible borrower, processes outliving their job, Ray and Corral
disagreeing on free GPUs, and a node that cannot start anything.

Real CLI → real API → controller → a real local Ray cluster (the shared session of conftest.py).
Every test leaves the cluster idle for the next one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.conftest import ADMIN, TEAM_A, TERMINAL, Corral

pytestmark = [pytest.mark.xdist_group("e2e"), pytest.mark.timeout(600)]

EAST = "cn-east-r1-n00"
NORTH_1 = "cn-north-r1-n01"


def _kinds(job: dict[str, Any]) -> list[str]:
    return [str(e["kind"]) for e in job["history"]]


def _cancel_all(corral: Corral, *job_ids: str) -> None:
    for job_id in job_ids:
        if corral.job(job_id)["state"] not in TERMINAL:
            corral.run("cancel", job_id, "--grace", "0", check=False)
    for job_id in job_ids:
        corral.wait_for(job_id, list(TERMINAL), timeout=60)


# --- the four reproductions of the hardening issue ------------------------------------------------


def test_a_command_that_does_not_exist_fails_with_127_at_once(corral: Corral) -> None:
    t0 = time.monotonic()
    job_id = corral.submit("--gpus", "1", "--", "/no/such/binary")
    job = corral.wait_for(job_id, ["FAILED"], timeout=30)
    assert time.monotonic() - t0 < 30
    assert job["exit_code"] == 127 and job["restart_count"] <= 3
    failed = [e for e in job["history"] if e["kind"] == "FAILED"]
    assert failed and "command not found: /no/such/binary" in failed[-1]["message"]
    assert "corral: command not found: /no/such/binary" in corral.run("logs", job_id).stdout


def test_an_empty_command_is_refused_by_the_api_as_by_the_cli(corral: Corral) -> None:
    status = corral.status()
    headers = {"Authorization": f"Bearer {corral.tokens[ADMIN]}"}
    before = len(json.loads(corral.run("jobs", "--all", "-o", "json").stdout))
    r = httpx.post(f"{status['api_url']}/v1/jobs", json={"command": []}, headers=headers, timeout=10)
    assert r.status_code == 422 and r.json()["field"] == "command", r.text
    cli = corral.run("submit", "--gpus", "1", check=False)
    assert cli.returncode == 2 and "command" in cli.stderr
    assert len(json.loads(corral.run("jobs", "--all", "-o", "json").stdout)) == before


def test_a_job_cannot_claim_the_gpus_of_the_node(corral: Corral) -> None:
    refused = corral.run(
        "submit", "--gpus", "1", "-e", "CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7", "--", "true", check=False
    )
    assert refused.returncode == 2
    assert "CUDA_VISIBLE_DEVICES is set by the scheduler" in refused.stderr
    job_id = corral.submit("--gpus", "1", "--", "sh", "-c", "echo GPUS=$CUDA_VISIBLE_DEVICES")
    corral.wait_for(job_id, ["SUCCEEDED"], timeout=60)
    (line,) = [x for x in corral.run("logs", job_id).stdout.splitlines() if x.startswith("GPUS=")]
    assert re.fullmatch(r"GPUS=\d+", line), line  # one device, never the node's eight


def test_leading_zeros_name_the_same_job_everywhere(corral: Corral) -> None:
    job_id = corral.submit("--gpus", "1", "--", "echo", "zeros")
    corral.wait_for(job_id, ["SUCCEEDED"], timeout=60)
    padded = "00" + job_id
    plain, zeros = corral.describe(job_id), corral.describe(padded)
    assert zeros["id"] == job_id and zeros["history"] == plain["history"] and zeros["audit"] == plain["audit"]
    assert zeros["history"] and zeros["audit"]
    assert corral.run("logs", padded).stdout == corral.run("logs", job_id).stdout
    too_big = corral.run("describe", "9999999999999999999", check=False)
    assert too_big.returncode == 3 and "not found" in too_big.stderr


def test_reasons_say_times_people_read(corral: Corral) -> None:
    holder = corral.submit(
        "--gpus", "8", "--region", "cn-north", "--time", "1h", "--name", "holder", "--", "sleep", "600"
    )
    corral.wait_for(holder, ["RUNNING"], timeout=60)
    gang = corral.submit("-N", "2", "--gpus-per-node", "8", "--region", "cn-north", "--", "sleep", "1")
    deadline = time.monotonic() + 30
    reason = ""
    while time.monotonic() < deadline and not reason.startswith("Reserved"):
        reason = str(corral.job(gang)["pending_reason"] or "")
        time.sleep(0.5)
    try:
        assert reason.startswith("Reserved"), reason
        assert not re.search(r"t=\d|\d{9,}", reason), reason  # no raw epoch seconds
        assert " 1 nodes" not in reason and re.search(r"in about \d+ (s|min|h|d)\b", reason), reason
        table = corral.run("jobs").stdout
        assert not re.search(r"\d{9,}", table), table
    finally:
        _cancel_all(corral, gang, holder)


# --- what jobs must not reach or do ---------------------------------------------------------------


def test_a_token_cannot_submit_past_its_limits(corral: Corral) -> None:
    token = corral.run(
        "token", "create", "--team", "team-limited", "--max-priority", "normal", "--max-gpus", "8"
    ).stdout.splitlines()[-1]
    for args, field in (
        (["--priority", "high"], "priority"),
        (["--gpus", "16"], "gpus"),
        (["--name", "x"], None),  # within its limits
    ):
        run = corral.run("submit", "-q", *args, "--", "true", token=token, check=False)
        if field is None:
            assert run.returncode == 0, run.stderr
            corral.wait_for(run.stdout.strip(), ["SUCCEEDED"], timeout=60, token=token)
        else:
            assert run.returncode == 4 and field in run.stderr and len(run.stderr.splitlines()) == 1, (
                run.stderr
            )
    protected = corral.run("submit", str(_spec(corral, "preemptible: false\n")), token=token, check=False)
    assert protected.returncode == 4 and "preemptible" in protected.stderr, protected.stderr


def _spec(corral: Corral, extra: str) -> os.PathLike[str]:
    path = corral.cwd / "spec.yaml"
    path.write_text("name: spec\ncommand: [echo, hi]\n" + extra)
    return path


def test_a_team_job_cannot_read_the_controllers_secrets(corral: Corral) -> None:
    if os.geteuid() != 0:
        pytest.skip("not root: jobs run as the user who ran `corral up`, whom local mode trusts (README)")
    home = corral.home
    script = (
        f"id -u; pwd; cat {home}/context.yaml; cat {home}/corral.db | head -c 100; "
        f"ls {home}/logs; cat {home}/logs/controller.log | head -c 100; true"
    )
    job_id = corral.submit("--gpus", "1", "--", "sh", "-c", script, token=TEAM_A)
    corral.wait_for(job_id, ["SUCCEEDED"], timeout=60, token=TEAM_A)
    log = corral.run("logs", job_id, token=TEAM_A).stdout
    assert corral.tokens[ADMIN] not in log and "SQLite" not in log
    assert "Permission denied" in log
    lines = [x for x in log.splitlines() if not x.startswith("=== corral")]
    uid, cwd = lines[0], lines[1]
    assert uid.isdigit() and uid != "0"  # Corral runs as root (as in CI): its jobs do not
    assert not cwd.startswith(str(home))  # submitted from the job dir, never inside CORRAL_HOME


def test_a_setsid_grandchild_is_gone_after_cancel(corral: Corral) -> None:
    marker = "1223"
    job_id = corral.submit("--gpus", "1", "--", "sh", "-c", f"setsid sleep {marker} & sleep 300")
    corral.wait_for(job_id, ["RUNNING"], timeout=60)
    assert _wait(lambda: _sleeps(marker) > 0, 10), "the grandchild never started"
    corral.run("cancel", job_id, "--grace", "1")
    corral.wait_for(job_id, ["CANCELLED"], timeout=60)
    assert _wait(lambda: _sleeps(marker) == 0, 10), "the setsid grandchild outlived its job"


def _sleeps(marker: str) -> int:
    count = 0
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"] == ["sleep", marker]:
            count += 1
    return count


def _wait(done: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.2)
    return bool(done())


# --- quota: a borrower cannot keep what it borrowed -----------------------------------------------


def test_a_non_preemptible_borrower_is_reclaimed_by_the_lender(corral: Corral) -> None:
    nlp = corral.run(
        "token", "create", "--team", "nlp", "--queues", "nlp", "--allow-non-preemptible"
    ).stdout.splitlines()[-1]
    vision = corral.run("token", "create", "--team", "vision", "--queues", "vision").stdout.splitlines()[-1]
    # nlp (quota 8) borrows 8 more of the cohort's idle quota with a job it marks non-preemptible
    spec = corral.cwd / "borrower.yaml"
    spec.write_text(
        "name: borrower\nqueue: nlp\nnodes: 2\ngpus_per_node: 8\ndata_region: cn-north\n"
        "preemptible: false\nmin_runtime_s: 31000000\ngrace_period_s: 2\ncommand: [sleep, '600']\n"
    )
    borrower = corral.submit(str(spec), token=nlp)
    filler = corral.submit("--gpus", "8", "--region", "cn-east", "--", "sleep", "600")
    try:
        corral.wait_for(borrower, ["RUNNING"], timeout=60, token=nlp)
        corral.wait_for(filler, ["RUNNING"], timeout=60)
        # vision wants its own nominal quota back: nothing is free, so nlp's borrowed job must go
        t0 = time.monotonic()
        lender = corral.submit(
            "--queue", "vision", "--gpus", "8", "--region", "cn-north", "--", "sleep", "2", token=vision
        )
        corral.wait_for(lender, ["RUNNING", "SUCCEEDED"], timeout=60, token=vision)
        took = time.monotonic() - t0
        story = "; ".join(
            f"{e['time'] % 1000:.2f} {j} {e['kind']}"
            for j in (borrower, lender)
            for e in corral.describe(j, token=ADMIN)["history"]
        )
        assert took < 2 + 15, (took, story)  # its grace period, a few cycles and a start
        seen_by_nlp = corral.describe(borrower, token=nlp)
        assert seen_by_nlp["preemption_count"] == 1, story  # reclaimed once, never borrowing it back
        assert "PREEMPTING" in _kinds(seen_by_nlp)
        (preempting,) = [e for e in seen_by_nlp["history"] if e["kind"] == "PREEMPTING"]
        assert "borrowed quota" in preempting["message"]
        for entry in [*seen_by_nlp["history"], *seen_by_nlp["audit"]]:  # the other team stays anonymous
            assert entry["related_job"] == "" and entry["private_detail"] == "", entry
            text = entry.get("message", entry.get("detail", ""))
            assert f"job {lender}" not in text and "vision" not in text, entry
        seen_by_admin = corral.describe(borrower, token=ADMIN)
        assert any(e["related_job"] == lender for e in seen_by_admin["history"])
    finally:
        _cancel_all(corral, borrower, filler)


# --- Ray and Corral agree on free GPUs; a node that cannot start is cordoned ----------------------


@contextmanager
def _outside_placement_group(address: str, node: str, gpus: int) -> Iterator[None]:
    """A placement group that holds `gpus` GPUs of `node`, made by another Ray driver (as a leak or a
    user's own Ray program would); it goes when the driver exits."""
    code = (
        "import sys, ray\n"
        "from ray.util.placement_group import placement_group\n"
        f"ray.init(address={address!r}, log_to_driver=False)\n"
        f"pg = placement_group([{{'GPU': {gpus}}}],"
        f" bundle_label_selector=[{{'corral.dev/node': {node!r}}}])\n"
        "ray.get(pg.ready(), timeout=60)\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield
    finally:
        proc.kill()
        proc.wait(30)


def _node(corral: Corral, node: str) -> dict[str, Any]:
    nodes = corral.get("/v1/nodes").json()  # polled: over HTTP, not a CLI process each time
    # a controller that just restarted lists no node until its first cycle has seen Ray's
    return next((n for n in nodes if n["id"] == node), {"id": node, "state": "not listed yet"})


def test_gpus_held_outside_corral_are_not_given_to_jobs(corral: Corral) -> None:
    """The 30 s until a lasting difference is exported as drift (the gauge and the alert) is
    tested on a virtual clock in tests/control/test_hardening.py."""
    status = corral.status()
    with _outside_placement_group(status["ray"]["address"], EAST, 8):
        job_id = corral.submit("--gpus", "8", "--region", "cn-east", "--", "echo", "ran")
        try:
            time.sleep(8)
            # GPUs Corral itself freed on that node in the last SETTLING_S (10 s: an earlier test's
            # job) read as still being released by Ray for that long; then the reason is Resources.
            deadline = time.monotonic() + 30
            while True:
                job = corral.job(job_id)
                assert job["state"] == "PENDING" and job["restart_count"] == 0, job  # no start, no requeue
                if job["pending_reason"].startswith("Resources") or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert job["pending_reason"].startswith("Resources"), job["pending_reason"]
            assert corral.describe(job_id)["pending_reason"].startswith("Resources")  # the CLI says it too
        except BaseException:
            _cancel_all(corral, job_id)
            raise
    corral.wait_for(job_id, ["SUCCEEDED"], timeout=60)  # once the outside holder let go


def _restart_controller(corral: Corral, **env: str) -> None:
    state = json.loads((corral.home / "local.json").read_text())
    os.kill(int(state["pid"]), signal.SIGTERM)
    psutil.Process(int(state["pid"])).wait(30)
    saved = dict(corral.env)
    corral.env.update(env)
    for name in ("CORRAL_FAULTS", "CORRAL_START_TIMEOUT_S"):
        if name not in env:
            corral.env.pop(name, None)
    try:
        corral.run("up", timeout=180)
    finally:
        corral.env = saved


def test_a_node_that_cannot_start_jobs_is_cordoned_instead_of_requeuing_for_ever(corral: Corral) -> None:
    shares = {q["name"]: q["fair_share"] for q in json.loads(corral.run("queues", "-o", "json").stdout)}
    try:  # the faulty controller is replaced whatever fails: later tests share this install
        _restart_controller(
            corral,
            CORRAL_FAULTS=f"unplaceable_node={EAST},rank_dies_on_node={NORTH_1}",
            CORRAL_START_TIMEOUT_S="3",
        )
        after = {q["name"]: q["fair_share"] for q in json.loads(corral.run("queues", "-o", "json").stdout)}
        assert after == pytest.approx(shares, abs=0.02)  # fair-share usage came back from the store
        # A rank whose worker actor dies once the group is placed fails the start: the job is
        # requeued naming the node (it once stayed STARTING for ever).
        gang = corral.submit("-N", "2", "--gpus-per-node", "1", "--region", "cn-north", "--", "true")
        assert _wait(lambda: "REQUEUED" in _kinds(corral.describe(gang)), 30), corral.describe(gang)
        corral.run("cancel", gang, "--grace", "0")
        requeued = next(e for e in corral.describe(gang)["history"] if e["kind"] == "REQUEUED")
        assert f"on node {NORTH_1}" in requeued["message"], requeued
        job_id = corral.submit("--gpus", "8", "--region", "cn-east", "--", "echo", "ran")
        assert _wait(lambda: _node(corral, EAST)["state"] == "draining", 90), _node(corral, EAST)
        job = corral.describe(job_id)
        assert "NODE_CORDONED" in _kinds(job) and job["state"] == "PENDING", job
        requeues = [e for e in job["history"] if e["kind"] == "REQUEUED"]
        assert len(requeues) == 3 and all("not ready within 3 s" in e["message"] for e in requeues)
        assert "3 starts in a row failed" in _node(corral, EAST)["cordon_reason"]
        time.sleep(25)  # past the last backoff: it waits for a node, it is not started there again
        assert corral.describe(job_id)["restart_count"] == 3
    finally:
        _restart_controller(corral)
        uncordoned = corral.run("uncordon", EAST, check=False)
    assert uncordoned.returncode == 0, uncordoned.stderr
    done = corral.wait_for(job_id, ["SUCCEEDED"], timeout=60)
    assert done["restart_count"] == 3
