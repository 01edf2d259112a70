"""End to end, through the real CLI, API, controller and local Ray cluster: what would start a
waiting job now, and why a job was preempted (told to its team without naming the other team's
job; an admin sees which). Leaves the cluster idle."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import ADMIN, TEAM_A, TEAM_B, Corral

pytestmark = [pytest.mark.xdist_group("e2e"), pytest.mark.timeout(600)]


def _joined(text: str) -> str:
    """The text with its line breaks and padding gone: the last column of a table wraps at 80."""
    return " ".join(text.split())


def _cancel(corral: Corral, *jobs: str) -> None:
    for job in jobs:
        corral.run("cancel", job, "--grace", "0", token=ADMIN, check=False)
    for job in jobs:
        corral.wait_for(job, ["CANCELLED", "SUCCEEDED", "FAILED"], timeout=60, token=ADMIN)


def test_a_waiting_job_is_told_what_would_start_it_now(corral: Corral) -> None:
    filler = corral.submit("--gpus", "4", "--region", "cn-east", "--", "sleep", "600")
    waiting = ""
    try:
        corral.wait_for(filler, ["RUNNING"], timeout=60)
        waiting = corral.submit("--gpus", "8", "--region", "cn-east", "--name", "wants-8", "--", "true")
        deadline = time.monotonic() + 60
        job = corral.job(waiting)
        while not job["suggestions"] and time.monotonic() < deadline:  # refreshed every few seconds
            time.sleep(1.0)
            job = corral.job(waiting)
        assert job["state"] == "PENDING", job
        assert job["pending_reason"].startswith("Resources: needs 8 GPUs in cn-east"), job
        # cn-north is idle, but the job's data stays in cn-east: only a smaller shape is offered.
        assert [s["flag"] for s in job["suggestions"]] == ["--gpus 4"], job["suggestions"]
        assert job["suggestions"][0]["text"] == "fits now with `--gpus 4` (4 GPUs instead of 8)"
        table = corral.run("jobs").stdout
        assert "(fits now with --gpus 4)" in _joined(table), table  # REASON wraps at 80 columns
        text = corral.run("describe", waiting).stdout
        assert "Would start now" in text and "fits now with `--gpus 4` (4 GPUs instead of 8)" in _joined(text)
        print(table, text, sep="\n")  # shown with -s: the README's example
    finally:
        _cancel(corral, *(j for j in (filler, waiting) if j))


def test_history_says_why_a_job_was_preempted_and_whom_only_to_an_admin(corral: Corral) -> None:
    low = corral.submit(
        "--gpus", "8", "--region", "cn-east", "--priority", "low", "--grace", "2", "--name", "low",
        "--", "sleep", "600", token=TEAM_A,
    )  # fmt: skip
    high = ""
    try:
        corral.wait_for(low, ["RUNNING"], timeout=60, token=TEAM_A)
        time.sleep(2.0)
        high = corral.submit(
            "--gpus", "8", "--region", "cn-east", "--priority", "high", "--name", "urgent",
            "--", "sleep", "1", token=TEAM_B,
        )  # fmt: skip
        corral.wait_for(high, ["RUNNING", "SUCCEEDED"], timeout=60, token=TEAM_B)
        mine = corral.describe(low, token=TEAM_A)
        (event,) = [e for e in mine["history"] if e["kind"] == "PREEMPTING"]
        assert event["message"].startswith(
            "preempted for a job of a higher priority class (rule: priority); loses up to "
        ), event
        assert (
            "since this attempt started and its grace period, as it reported no checkpoint"
            in event["message"]
        ), event
        assert event["related_job"] == "" and event["private_detail"] == ""  # team-b's job: not named
        text = corral.run("describe", low, token=TEAM_A).stdout
        assert "Last preempted" in text and "(rule: priority)" in _joined(text), text
        assert f"job {high}" not in text and f"job {high}" not in json.dumps(mine)
        admin_text = corral.run("describe", low, token=ADMIN).stdout
        said = f"by job {high}: preempted for a job of a higher priority class"
        assert said in _joined(admin_text), admin_text
        history = admin_text.split("History")[1]
        assert "PREEMPTING" in history and "loses up to" in history, admin_text  # not cut at 80
        print(text, admin_text, sep="\n")  # shown with -s: the README's example
    finally:
        _cancel(corral, *(j for j in (low, high) if j))
