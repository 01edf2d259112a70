"""Job arrays in the CLI: submitting one, showing its tasks as Slurm's squeue does, finding a task.

Slurm's display: running (and finished) tasks one per line as `ARRAY_INDEX` (`12_3`), the pending
ones of an array folded into one line `12_[4-15]` (with `%N` when the array has a cap), at the place
of its lowest pending index. `-o json|yaml` keep one row per task, unfolded.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

from scheduler.cli.client import ApiClient
from scheduler.cli.errors import EXIT_JOB_FAILED, EXIT_NOT_FOUND, EXIT_OK, fail
from scheduler.cli.output import note
from scheduler.model.array import compact

__all__ = ["array_path", "fold", "submitted", "task_id", "task_label"]

_TASK = re.compile(r"^(\d{1,19})_(\d{1,9})$")
WAIT_POLL_S = 0.5


def array_path(array_id: str, suffix: str = "") -> str:
    return f"/v1/arrays/{quote(array_id, safe='')}{suffix}"


def task_label(job: dict[str, Any]) -> str:
    """`12_3` for task 3 of array 12, else the job's id."""
    if job.get("array_id") is not None and job.get("array_index") is not None:
        return f"{job['array_id']}_{job['array_index']}"
    return str(job["id"])


def fold(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows for the table: tasks labelled `12_3`, each array's pending tasks folded into one row
    `12_[4-15%4]` (the first pending task's row, with its reason)."""
    pending: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("array_id") is not None and row["state"] == "PENDING":
            pending.setdefault(str(row["array_id"]), []).append(row)
    out: list[dict[str, Any]] = []
    for row in rows:
        array_id = row.get("array_id")
        if array_id is None:
            out.append(row)
        elif row["state"] != "PENDING":
            out.append({**row, "id": task_label(row)})
        elif pending[str(array_id)][0] is row:
            group = pending[str(array_id)]
            out.append({**row, "id": _folded_label(str(array_id), group)})
    return out


def _folded_label(array_id: str, group: list[dict[str, Any]]) -> str:
    indices = [int(r["array_index"]) for r in group]
    expression = str(group[0].get("spec", {}).get("array") or "")
    _, sep, cap = expression.partition("%")
    cap_text = f"%{cap.strip()}" if sep else ""
    if len(indices) == 1 and not cap_text:
        return f"{array_id}_{indices[0]}"
    return f"{array_id}_[{compact(indices)}{cap_text}]"


def task_id(api: ApiClient, raw: str) -> str:
    """The job id of `12_3` (task 3 of array 12); any other id as given."""
    match = _TASK.match(raw)
    if match is None:
        return raw
    array_id, index = match.group(1), int(match.group(2))
    found = api.get(array_path(array_id))
    for task in found["tasks"]:
        if task["array_index"] == index:
            return str(task["id"])
    indices = compact([t["array_index"] for t in found["tasks"]])
    fail(f"array {array_id} has no task {index}: its indices are {indices}", EXIT_NOT_FOUND)


def submitted(api: ApiClient, answer: dict[str, Any], again: bool, quiet: bool, wait: bool) -> None:
    """Report a submitted array (its id on stdout, as Slurm's sbatch) and, with --wait, wait for all
    of its tasks: exit 1 unless every one succeeded."""
    array_id, tasks = str(answer["array_id"]), answer["tasks"]
    print(array_id, flush=True)
    if not quiet:
        cap = answer.get("max_running")
        limit = f", at most {cap} running at once" if cap else ""
        what = "already submitted as array" if again else "submitted array"
        queue = tasks[0]["queue"] if tasks else "-"
        note(
            f"{what} {array_id}: {len(tasks)} tasks (indices {compact([t['array_index'] for t in tasks])}"
            f"{limit}) to queue {queue}"
        )
    if wait:
        _wait(api, array_id)


def _wait(api: ApiClient, array_id: str) -> None:
    try:
        while True:
            tasks = api.get(array_path(array_id))["tasks"]
            if all(t["state"] in ("SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT") for t in tasks):
                break
            time.sleep(WAIT_POLL_S)
    except KeyboardInterrupt:
        note(f"stopped waiting; array {array_id} goes on (`corral cancel {array_id}` stops it)")
        raise SystemExit(130) from None
    failed = [task_label(t) for t in tasks if t["state"] != "SUCCEEDED"]
    if failed:
        shown = ", ".join(failed[:10]) + (f" and {len(failed) - 10} more" if len(failed) > 10 else "")
        note(f"array {array_id}: {len(tasks) - len(failed)} of {len(tasks)} tasks succeeded; not: {shown}")
        raise SystemExit(EXIT_JOB_FAILED)
    note(f"array {array_id}: all {len(tasks)} tasks succeeded")
    raise SystemExit(EXIT_OK)


def cancel(api: ApiClient, raw: str, grace: float | None) -> bool:
    """Cancel the whole array if `raw` is an array's id (as Slurm's scancel); False if it is not one."""
    if _TASK.match(raw):
        return False
    job = api.get(f"/v1/jobs/{quote(raw, safe='')}")
    if job.get("array_id") is None or str(job["array_id"]) != str(job["id"]):
        return False
    answer = api.post(array_path(str(job["id"]), "/cancel"), {"grace_s": grace}).json()
    live = [t for t in answer["tasks"] if t["cancel_requested"]]
    note(f"cancel requested for array {answer['array_id']}: {len(live)} of {len(answer['tasks'])} tasks")
    return True
