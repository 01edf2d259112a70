"""Cluster commands: queues (quota, borrowed, used, pending) and nodes (GPUs used/free, labels)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.cli.client import client
from scheduler.cli.output import Column, OutputOpt, check_format, emit, render_table

__all__ = ["nodes", "queues"]


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
    ("LABELS", lambda n: ",".join(f"{k}={v}" for k, v in sorted(n["labels"].items())) or "-"),
]


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
