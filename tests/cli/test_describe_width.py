"""`corral describe` in an 80-column terminal: every column of the history and audit tables stays,
and the free text wraps instead of being cut (it was cut to "...(rule: priority); l", and the
EVENT, ATTEMPT and NODE columns were squeezed out)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from scheduler.cli.jobs_cmd import _describe_table, _when

MESSAGE = (
    "preempted for a job of a higher priority class (rule: priority); loses up to 7 s of work: its "
    "run since this attempt started and its grace period, as it reported no checkpoint"
)
DETAIL = "data_region=cn-east; all 1 nodes in cn-east: pass"


def _job(residency_ok: bool = True) -> dict[str, Any]:
    return {
        "id": "3", "name": "low", "team": "team-a", "queue": "default", "priority": "low",
        "state": "RUNNING", "gpu_type": "any", "nodes": 1, "gpus_per_node": 8, "gpus": 8,
        "data_region": "cn-east", "allocation": None, "submitted_at": 1764700000.0,
        "started_at": 1764700010.0, "finished_at": None, "run_time_s": 2.0, "time_limit_s": None,
        "restart_count": 1, "preemption_count": 1, "exit_code": None,
        "spec": {"command": ["sleep", "600"], "checkpoint_dir": None, "preemptible": True,
                 "grace_period_s": 2.0},
        "history": [
            {"time": 1764700008.0, "kind": "PREEMPTING", "attempt": 1, "node": "cn-east-r1-n00",
             "message": MESSAGE, "related_job": "", "private_detail": ""},
        ],
        "audit": [
            {"time": 1764700005.0, "decision": "place", "attempt": 1, "nodes": ["cn-east-r1-n00"],
             "node_regions": ["cn-east" if residency_ok else "eu-west"], "residency_ok": residency_ok,
             "data_region": "cn-east", "detail": DETAIL, "private_detail": ""},
        ],
    }  # fmt: skip


def _render(job: dict[str, Any], width: int) -> str:
    console = Console(width=width, file=io.StringIO(), soft_wrap=False)
    console.print(_describe_table(job))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


@pytest.mark.parametrize("width", [80, 120, 200])
def test_describe_keeps_every_column_and_the_whole_message(width: int) -> None:
    text = _render(_job(), width)
    assert max(len(line) for line in text.splitlines()) <= width
    history, audit = text.split("History")[1].split("Audit")
    for header in ("TIME", "EVENT", "ATTEMPT", "NODE", "MESSAGE"):
        assert header in history.splitlines()[1], history
    assert "PREEMPTING" in history and "cn-east-r1-n00" in history and _when(1764700008.0) in history
    assert MESSAGE in " ".join(history.split()), history  # wrapped, never cut
    for header in ("TIME", "DECISION", "ATTEMPT", "NODES", "RESIDENCY", "DETAIL"):
        assert header in audit.splitlines()[1], audit
    assert "ok (cn-east)" in audit


def test_a_residency_violation_names_the_nodes_regions() -> None:
    audit = _render(_job(residency_ok=False), 200).split("Audit")[1]
    assert "VIOLATED (data cn-east, nodes in eu-west)" in audit
