"""Counterfactual reasons and why-preempted through the real CLI against a real uvicorn server
(cluster of tests/api/harness.py: cn-north 2×8 H100 + 1×8 A100, eu-west 2×8 H100)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.model.job import JobState
from tests.api.harness import Served, until


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with Served(tmp_path) as s:
        yield s


def _submit(served: Served, who: str, *args: str) -> str:
    run = served.cli(who)("submit", "-q", *args)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_a_waiting_job_is_told_what_would_start_it_now(served: Served) -> None:
    h, cli = served.h, served.cli("a")
    h100 = ["--gpus", "8", "--gpu-type", "H100", "--region", "cn-north", "--queue", "ml-a"]
    for _ in range(2):  # cn-north's two H100 nodes are busy
        h.start(_submit(served, "a", *h100, "--", "sleep", "60"))
    waiting = _submit(served, "a", *h100, "--", "true")
    h.wait_for(waiting, [JobState.PENDING])

    def suggested() -> bool:
        h.controller.suggester.refresh()  # what its thread does every few seconds
        return bool(h.controller.suggestions(waiting))

    until(suggested, "a suggestion for the waiting job")
    described = json.loads(cli("describe", waiting, "-o", "json").stdout)
    assert described["pending_reason"].startswith("Resources: needs 8 H100 in cn-north")
    # The A100 node of cn-north is free; eu-west's H100 nodes are free too, but its data stays in cn-north.
    assert described["suggestions"] == [
        {
            "kind": "gpu_type",
            "change": {"gpu_type": "A100"},
            "flag": "--gpu-type A100",
            "text": "fits now with `--gpu-type A100` (in cn-north)",
        }
    ]
    text = cli("describe", waiting).stdout
    assert "Would start now" in text and "fits now with `--gpu-type A100` (in cn-north)" in text
    table = cli("jobs").stdout
    assert "(fits now with --gpu-type A100)" in table, table
    assert "eu-west" not in json.dumps(described["suggestions"])
    # The suggestion holds: the same job with that flag starts at once.
    applied = _submit(served, "a", *h100[:2], "--gpu-type", "A100", *h100[4:], "--", "true")
    h.wait_for(applied, [JobState.STARTING, JobState.RUNNING])
    # Another team does not even see the job; a running job has no suggestions.
    assert served.cli("b")("describe", waiting).returncode == 3
    assert json.loads(cli("describe", applied, "-o", "json").stdout)["suggestions"] == []


def test_history_and_describe_say_why_a_job_was_preempted_and_by_whom_only_to_whom_it_may(
    served: Served,
) -> None:
    h = served.h
    eu = ["-N", "2", "--gpus-per-node", "8", "--gpu-type", "H100", "--region", "eu-west"]
    low = _submit(served, "a", *eu, "--queue", "ml-a", "--priority", "low", "--", "sleep", "60")
    h.start(low)
    high = _submit(served, "b", *eu, "--queue", "ml-b", "--priority", "high", "--", "sleep", "60")
    until(lambda: bool(h.backend.stops_of(low)), "the preemption of team ml-a's job")
    h.exit(low, 143)
    h.wait_for(low, [JobState.PENDING])

    mine = json.loads(served.cli("a")("describe", low, "-o", "json").stdout)
    (event,) = [e for e in mine["history"] if e["kind"] == "PREEMPTING"]
    assert event["message"].startswith(
        "preempted for a job of a higher priority class (rule: priority); loses up to "
    )
    assert "since this attempt started and its grace period, as it reported no checkpoint" in event["message"]
    assert event["related_job"] == "" and event["private_detail"] == ""  # another team's job
    text = served.cli("a")("describe", low).stdout
    assert "Last preempted" in text and "(rule: priority)" in text
    assert f"job {high}" not in text and "ml-b" not in text

    admin_text = served.cli("admin")("describe", low).stdout
    assert f"by job {high}: preempted for a job of a higher priority class" in admin_text
    admin = json.loads(served.cli("admin")("describe", low, "-o", "json").stdout)
    (seen,) = [e for e in admin["history"] if e["kind"] == "PREEMPTING"]
    assert seen["related_job"] == high and seen["private_detail"].startswith(f"for job {high}: priority")
