"""Cluster commands: queues (quota, borrowed, used, pending), nodes (GPUs used/free, labels), and
cordon / uncordon (admins)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import quote

import typer

from scheduler.cli.client import client
from scheduler.cli.output import Column, OutputOpt, check_format, emit, render_table, stderr

__all__ = ["cordon", "nodes", "queues", "uncordon"]


def _per_type(values: Mapping[str, int]) -> str:
    return ",".join(f"{t}:{n}" for t, n in sorted(values.items()) if n) or "-"


def _limit(value: int | None) -> str:
    return "∞" if value is None else str(value)


QUEUE_COLUMNS: list[Column] = [
    ("QUEUE", lambda q: str(q["name"])),
    ("COHORT", lambda q: q.get("cohort") or "-"),
    ("QUOTA", lambda q: _per_type(q["quota"])),
    ("USED", lambda q: _per_type(q["used"])),
    ("BORROWED", lambda q: str(q["borrowed"])),
    ("BORROW-LIMIT", lambda q: _limit(q.get("borrowing_limit"))),
    ("RUNNING", lambda q: str(q["running"])),
    ("PENDING", lambda q: str(q["pending"])),
]

NODE_COLUMNS: list[Column] = [
    ("NODE", lambda n: str(n["id"])),
    ("REGION", lambda n: str(n["region"])),
    ("RACK", lambda n: str(n["rack"])),
    ("TYPE", lambda n: str(n["gpu_type"])),
    ("GPUS", lambda n: str(n["gpus"])),
    ("USED", lambda n: str(n["used"])),
    ("FREE", lambda n: str(n["free"])),
    ("STATE", lambda n: str(n["state"])),
    ("JOBS", lambda n: ",".join(n["jobs"]) or "-"),
    ("NOTE", lambda n: _note(n)),
    ("LABELS", lambda n: ",".join(f"{k}={v}" for k, v in sorted(n["labels"].items())) or "-"),
]


def _note(node: Mapping[str, Any]) -> str:
    notes = []
    if node.get("cordon_reason"):
        notes.append(f"cordoned: {node['cordon_reason']}")
    if node.get("drift_gpus"):
        notes.append(f"{node['drift_gpus']} GPUs held outside Corral")
    return "; ".join(notes) or "-"


def queues(output: OutputOpt = "table") -> None:
    """Queues: quota per GPU type, GPUs used and borrowed, running and pending jobs."""
    fmt = check_format(output)
    rows: list[dict[str, Any]] = client().get("/v1/queues")
    emit(rows, fmt, lambda: render_table(rows, QUEUE_COLUMNS))


def nodes(output: OutputOpt = "table") -> None:
    """Nodes: GPUs used and free, region / rack / GPU type, state and (your) jobs on each."""
    fmt = check_format(output)
    rows: list[dict[str, Any]] = client().get("/v1/nodes")
    emit(rows, fmt, lambda: render_table(rows, NODE_COLUMNS))


def cordon(
    node: Annotated[str, typer.Argument(help="Node id (see `corral nodes`).")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (shown in `corral nodes`).")] = None,
) -> None:
    """Take a node out of scheduling (admins): its jobs keep running, no new job goes there."""
    body = {"reason": reason} if reason else None
    out = client().post(f"/v1/nodes/{quote(node, safe='')}/cordon", body).json()
    stderr.print(f"node {out['id']} cordoned ({out['state']})", highlight=False, markup=False)


def uncordon(node: Annotated[str, typer.Argument(help="Node id (see `corral nodes`).")]) -> None:
    """Let a cordoned node take new jobs again (admins), e.g. once it is repaired."""
    out = client().post(f"/v1/nodes/{quote(node, safe='')}/uncordon").json()
    stderr.print(f"node {out['id']} uncordoned ({out['state']})", highlight=False, markup=False)
