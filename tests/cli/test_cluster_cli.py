"""`corral queues` and `corral nodes` through the real CLI against a real uvicorn server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.api.harness import Served


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with Served(tmp_path) as s:
        yield s


def test_queues_and_nodes(served: Served) -> None:
    cli = served.cli("a")
    job = cli(
        "submit", "--queue", "ml-a", "--gpus", "4", "--gpu-type", "H100", "-q", "--", "true"
    ).stdout.strip()
    record = served.h.start(job)
    node = record.allocation.nodes[0].node  # type: ignore[union-attr]

    with ThreadPoolExecutor(4) as pool:  # each run is a fresh interpreter: run them side by side
        table, as_json, nodes, as_yaml = pool.map(
            lambda args: cli(*args),
            [["queues"], ["queues", "-o", "json"], ["nodes"], ["nodes", "-o", "yaml"]],
        )
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header == ["QUEUE", "COHORT", "QUOTA", "USED", "BORROWED", "BORROW-LIMIT", "RUNNING", "PENDING"]
    row = next(line.split() for line in table.stdout.splitlines() if line.startswith("ml-a"))
    assert row[2:5] == ["A100:8,H100:16", "H100:4", "0"]
    queues = {q["name"]: q for q in json.loads(as_json.stdout)}
    assert queues["ml-a"]["running"] == 1 and queues["ml-b"]["used_gpus"] == 0

    assert nodes.returncode == 0, nodes.stderr
    n0 = next(line.split() for line in nodes.stdout.splitlines() if line.startswith(node))
    region = node.split("-r1-")[0]
    assert n0[1:9] == [region, f"{region}/r1", "H100", "8", "4", "4", "ready", job]
    listed = {n["id"]: n for n in yaml.safe_load(as_yaml.stdout)}
    assert len(listed) == 5 and listed["cn-north-a1-n00"]["gpu_type"] == "A100"
    theirs = {n["id"]: n for n in json.loads(served.cli("b")("nodes", "-o", "json").stdout)}
    assert theirs[node]["used"] == 4 and theirs[node]["jobs"] == []
