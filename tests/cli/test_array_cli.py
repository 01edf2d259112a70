"""Job arrays through the real CLI against a real server and controller: submit (flag and YAML),
squeue-like folding in `corral jobs`, `ARRAY_INDEX` ids, cancel of the whole array or one task."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.cli.arrays import fold
from tests.api.harness import HOLDING, Cli, Served, one_line_error, until


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with Served(tmp_path) as s:
        yield s


def _submit(cli: Cli, *args: str) -> str:
    run = cli("submit", "--queue", "ml-a", "--gpus", "1", *args, "--", "true")
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_submit_an_array_and_see_it_folded(served: Served) -> None:
    cli, h = served.cli("a"), served.h
    run = cli("submit", "--queue", "ml-a", "--gpus", "1", "--array", "0-3%1", "--", "true")
    assert run.returncode == 0, run.stderr
    array_id = run.stdout.strip()
    assert run.stderr.strip() == (
        f"submitted array {array_id}: 4 tasks (indices 0-3, at most 1 running at once) to queue ml-a"
    )
    tasks = h.store.array_tasks(array_id)
    assert [t.job.array_index for t in tasks] == [0, 1, 2, 3] and tasks[0].id == array_id
    h.wait_for(tasks[0].id, HOLDING)
    until(
        lambda: all(str(h.store.get(t.id).pending_reason).startswith("JobArrayTaskLimit") for t in tasks[1:]),  # type: ignore[union-attr]
        "the cap's reason",
    )
    table = cli("jobs").stdout
    assert re.search(rf"^\s*{array_id}_0\s+\S+\s+ml-a\s+STARTING", table, re.M), table
    assert re.search(rf"^\s*{array_id}_\[1-3%1\]\s+.*PENDING.*JobArrayTaskLimit", table, re.M), table
    assert len([line for line in table.splitlines() if array_id in line]) == 2, table
    # JSON keeps one row per task
    rows = json.loads(cli("jobs", "-o", "json").stdout)
    assert [(r["array_id"], r["array_index"]) for r in rows] == [(array_id, i) for i in range(4)]
    described = json.loads(cli("describe", f"{array_id}_2", "-o", "json").stdout)
    assert (described["id"], described["array_index"]) == (tasks[2].id, 2)
    one_line_error(cli("describe", f"{array_id}_9"), 3, f"array {array_id} has no task 9", "0-3")


def test_array_from_a_job_file_and_again_with_the_same_key(served: Served, tmp_path: Path) -> None:
    cli = served.cli("a")
    path = tmp_path / "sweep.yaml"
    path.write_text("name: sweep\nqueue: ml-a\ngpus: 1\narray: 1,3,5-9:2\ncommand: python train.py\n")
    first = cli("submit", path, "--idempotency-key", "sweep-7")
    again = cli("submit", path, "--idempotency-key", "sweep-7")
    assert first.returncode == again.returncode == 0, (first.stderr, again.stderr)
    assert first.stdout == again.stdout
    assert "already submitted as array" in again.stderr and "indices 1,3,5,7,9" in again.stderr
    assert len(served.h.store.jobs()) == 5


@pytest.mark.parametrize(
    ("array", "fragment"),
    [
        ("5-2", "write 2-5"),
        ("0-15%0", "at least 1 task must be allowed to run"),
        ("0-10000", "index 10000 is above the largest, 9999"),
    ],
)
def test_bad_array_is_one_line_and_nothing_is_sent(served: Served, array: str, fragment: str) -> None:
    run = served.cli("a")("submit", "--gpus", "1", "--array", array, "--", "true")
    one_line_error(run, 2, "array", fragment)
    assert served.h.store.jobs() == []


def test_cancel_the_array_or_one_task(served: Served) -> None:
    cli, h = served.cli("a"), served.h
    array_id = _submit(cli, "--array", "0-2")
    other = _submit(cli, "--array", "0-2")
    run = cli("cancel", f"{other}_1")
    assert run.returncode == 0, run.stderr
    assert [t.cancel_requested_at is not None for t in h.store.array_tasks(other)] == [False, True, False]
    run = cli("cancel", array_id, "--grace", "0")
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip() == f"cancel requested for array {array_id}: 3 of 3 tasks"
    assert all(t.cancel_requested_at is not None for t in h.store.array_tasks(array_id))
    # Another team's array is not found
    one_line_error(served.cli("b")("cancel", array_id), 3, f"job {array_id} not found")


def test_fold_keeps_plain_jobs_and_labels_tasks() -> None:
    def row(i: str, state: str, array: str | None = None, index: int | None = None) -> dict[str, object]:
        return {"id": i, "state": state, "array_id": array, "array_index": index, "spec": {"array": "0-4%2"}}

    rows = [
        row("5", "RUNNING"),
        row("6", "RUNNING", "6", 0),
        row("7", "PENDING", "6", 1),
        row("8", "PENDING"),
    ]
    rows += [row("9", "PENDING", "6", 2), row("10", "PENDING", "6", 4)]
    assert [r["id"] for r in fold(rows)] == ["5", "6_0", "6_[1-2,4%2]", "8"]
