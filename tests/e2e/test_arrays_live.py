"""Job arrays on a real `corral up`: every task runs for real with CORRAL_ARRAY_INDEX and
CORRAL_ARRAY_JOB_ID, never more than the `%N` cap at once; `corral jobs` folds the pending tasks as
Slurm's squeue does; `corral cancel ARRAY_ID` stops them all."""

from __future__ import annotations

import re

import pytest

from scheduler import Client, JobState
from tests.e2e.conftest import TEAM_A, Corral

pytestmark = [pytest.mark.xdist_group("e2e"), pytest.mark.timeout(600)]

PRINT_ENV = (
    "import os, time\n"
    "print('task', os.environ['CORRAL_ARRAY_INDEX'], 'of', os.environ['CORRAL_ARRAY_JOB_ID'],"
    " 'job', os.environ['CORRAL_JOB_ID'], flush=True)\n"
    "time.sleep(1.5)"
)


def test_tasks_run_with_their_index_never_above_the_cap(
    corral: Corral, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = corral.run(
        "submit", "--array", "0-4:2,7%2", "--gpus", "1", "--name", "sweep", "--wait",
        "--", "python3", "-c", PRINT_ENV, token=TEAM_A, timeout=240,
    )  # fmt: skip
    array_id = run.stdout.strip()
    assert re.search(rf"submitted array {array_id}: 4 tasks \(indices 0,2,4,7, at most 2 running", run.stderr)
    assert f"array {array_id}: all 4 tasks succeeded" in run.stderr
    with _client(corral, monkeypatch) as api:
        array = api.array(array_id)
        assert [t.array_index for t in array.tasks] == [0, 2, 4, 7] and array.max_running == 2
        for task in array.tasks:
            assert task.state is JobState.SUCCEEDED and task.array_id == array_id
            assert f"task {task.array_index} of {array_id} job {task.id}" in api.logs(task.id)
        # The `%2` cap: at no instant did three tasks hold GPUs.
        spans = [(t.started_at or 0.0, t.finished_at or 0.0) for t in array.tasks]
        assert max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans) <= 2, spans
    # `corral logs ARRAY_INDEX` reads one task's log
    assert f"task 7 of {array_id}" in corral.run("logs", f"{array_id}_7", token=TEAM_A).stdout


def test_jobs_folds_pending_tasks_and_cancel_stops_the_array(
    corral: Corral, monkeypatch: pytest.MonkeyPatch
) -> None:
    array_id = corral.submit(
        "--array", "0-3", "--gpus", "8", "--region", "cn-east", "--grace", "1", "--", "sleep", "600",
        token=TEAM_A,
    )  # fmt: skip
    first = corral.wait_for(array_id, ["RUNNING"], timeout=60, token=TEAM_A)
    assert (first["array_id"], first["array_index"]) == (array_id, 0)
    table = corral.run("jobs", token=TEAM_A).stdout
    assert re.search(rf"^\s*{array_id}_0\s.*RUNNING", table, re.M), table
    assert re.search(rf"^\s*{array_id}_\[1-3\]\s.*PENDING", table, re.M), table
    out = corral.run("cancel", array_id, token=TEAM_A)
    assert f"cancel requested for array {array_id}: 4 of 4 tasks" in out.stderr
    with _client(corral, monkeypatch) as api:
        done = api.wait_array(array_id, timeout=120)
    assert [t.state for t in done.tasks] == [JobState.CANCELLED] * 4


def _client(corral: Corral, monkeypatch: pytest.MonkeyPatch) -> Client:
    """Team A's client, finding the API through `corral up`'s context file."""
    monkeypatch.setenv("CORRAL_HOME", str(corral.home))
    monkeypatch.delenv("CORRAL_API_URL", raising=False)
    monkeypatch.setenv("CORRAL_TOKEN", corral.tokens[TEAM_A])
    return Client()
