"""The pure core stays pure: no I/O frameworks, no clocks or randomness, no mutation of its input."""

from __future__ import annotations

import ast
import copy
from pathlib import Path
from typing import Any

import pytest

from scheduler.model.snapshot import ClusterSnapshot
from scheduler.policy.config import POLICY_NAMES, PolicyConfig
from scheduler.policy.decide import decide
from tests.builders import cluster, job, node, queue, running, snapshot

ROOT = Path(__file__).resolve().parents[2] / "scheduler"
PURE_DIRS = [ROOT / "model", ROOT / "policy"]
PURE_FILES = sorted(p for d in PURE_DIRS for p in d.rglob("*.py"))

BANNED_MODULES = {
    "ray",
    "kubernetes",
    "prometheus_client",
    "fastapi",
    "typer",
    "sqlalchemy",
    "uuid",
    "random",
}
BANNED_CALLS = {
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("os", "urandom"),
}
BANNED_NAMES = {"time", "time_ns", "monotonic", "perf_counter", "now", "utcnow", "urandom"}


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            for alias in n.names:
                if alias.name.split(".")[0] in BANNED_MODULES:
                    found.append(f"{path.name}:{n.lineno}: import {alias.name}")
        elif isinstance(n, ast.ImportFrom) and n.module:
            top = n.module.split(".")[0]
            if top in BANNED_MODULES:
                found.append(f"{path.name}:{n.lineno}: from {n.module} import ...")
            if top in ("time", "datetime", "os"):
                for alias in n.names:
                    if alias.name in BANNED_NAMES:
                        found.append(f"{path.name}:{n.lineno}: from {n.module} import {alias.name}")
        elif isinstance(n, ast.Attribute):
            # time.time, datetime.now, datetime.datetime.now, dt.date.today ...
            base = n.value
            base_name = (
                base.id
                if isinstance(base, ast.Name)
                else base.attr
                if isinstance(base, ast.Attribute)
                else None
            )
            if base_name is not None and (base_name, n.attr) in BANNED_CALLS:
                found.append(f"{path.name}:{n.lineno}: {base_name}.{n.attr}")
    return found


def test_there_are_pure_modules_to_scan() -> None:
    names = {p.name for p in PURE_FILES}
    assert {"cycle.py", "decide.py", "snapshot.py", "capacity.py"} <= names


@pytest.mark.parametrize("path", PURE_FILES, ids=[str(p.relative_to(ROOT)) for p in PURE_FILES])
def test_pure_module_has_no_effects(path: Path) -> None:
    assert violations(path) == []


def test_the_scanner_catches_violations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import ray\nimport random as rnd\nfrom sqlalchemy.orm import Session\nimport time\n"
        "from datetime import datetime\nx = time.time()\ny = datetime.now()\nfrom time import monotonic\n"
        "import uuid\n"
    )
    assert len(violations(bad)) == 7


# --- decide() does not change its snapshot -------------------------------------------------------------
def freeze(snap: ClusterSnapshot) -> dict[str, Any]:
    """Everything observable in a snapshot, as plain comparable values."""
    cap = snap.capacity
    return {
        "nodes": {k: v.model_dump() for k, v in snap.nodes.items()},
        "free": sorted(cap.iter_free()),
        "free_total": cap.free_gpus(),
        "pools": {
            k: (
                p.free_gpus,
                p.eligible_at,
                {rid: (dict(r.free), r.eligible_at) for rid, r in p.racks.items()},
            )
            for k, p in cap.pools.items()
        },
        "queues": {k: v.model_dump() for k, v in snap.queues.items()},
        "classes": {k: v.model_dump() for k, v in snap.priority_classes.items()},
        "pending": {q: [j.model_dump() for j in jobs] for q, jobs in snap.pending.items()},
        "running": {
            k: (r.job.model_dump(), r.allocation.model_dump(), r.pool, r.started_at, r.checkpoint_interval_s)
            for k, r in snap.running.items()
        },
        "usage": {q: dict(u) for q, u in snap.queue_usage.items()},
        "history": dict(snap.usage_history),
        "gpus_by_type": dict(snap.gpus_by_type),
        # As tuples: a compiled frozen dataclass cannot be deep-copied (the compiled build's run).
        "shapes": {
            k: (s.nodes, s.max_gpus_per_node, s.nodes_by_min_gpus) for k, s in snap.pool_shapes.items()
        },
    }


def busy_snapshot(config: PolicyConfig) -> ClusterSnapshot:
    """Two regions, two GPU types, a cohort, running jobs of every class, and a varied queue of work."""
    nodes = [
        *cluster(racks=2, nodes_per_rack=3, region="cn", nvlink_domain_size=2),
        *cluster(racks=1, nodes_per_rack=2, region="eu", gpu_type="A100", gpus=4),
        node("cn-spare", region="cn", rack="cn/k9"),
    ]
    queues = [
        queue("a").quota(H100=24, A100=4).cohort("c").borrowing_limit(16).build(),
        queue("b").quota(H100=24, A100=4).cohort("c").lending_limit(8).build(),
        queue("solo").quota(H100=8).build(),
    ]
    on = nodes
    run = [
        running(
            job("r-low").queue("b").priority("low").gpus(8).submitted(-50).build(), ["cn-k0-n0"], 0.0, on=on
        ),
        running(
            job("r-norm").queue("a").gpus(8).nodes(2).submitted(-40).build(),
            ["cn-k0-n1", "cn-k0-n2"],
            10.0,
            on=on,
        ),
        running(
            job("r-a100").queue("b").gpu_type("A100").gpus(2).time_limit(900).build(),
            [("eu-k0-n0", (0, 1))],
            20.0,
            on=on,
        ),
        running(
            job("r-leave").queue("b").gpus(4).build(),
            [("cn-k1-n0", (0, 1, 2, 3))],
            30.0,
            on=on,
            preempting=True,
        ),
        running(job("r-solo").queue("solo").gpus(8).time_limit(5000).build(), ["cn-k1-n1"], 0.0, on=on),
    ]
    pending = [
        job("p-high").queue("a").priority("high").gpus(8).submitted(100).build(),
        job("p-gang").queue("b").gpus(8).nodes(3).region("cn").submitted(50).build(),
        job("p-small").queue("a").gpus(1).time_limit(60).submitted(60).runtime(30).build(),
        job("p-a100").queue("a").gpu_type("A100").gpus(4).region("eu").submitted(70).build(),
        job("p-huge").queue("b").gpus(8).nodes(40).submitted(80).build(),
        job("p-nope").queue("ghost").gpus(1).submitted(90).build(),
        job("p-requeued").queue("b").gpus(4).attained(50_000).submitted(0).build(),
        job("p-solo").queue("solo").gpus(8).submitted(5).build(),
    ]
    return snapshot(nodes, pending, run, queues=queues, config=config, usage_history={"a": 1e6, "b": 10.0})


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_decide_does_not_mutate_its_snapshot(policy: str) -> None:
    config = PolicyConfig(name=policy, default_min_runtime_s=0.0)
    snap = busy_snapshot(config)
    before = freeze(snap)
    deep = copy.deepcopy(before)
    plan = decide(snap, config, 3000.0)
    assert plan.decisions  # the snapshot is busy enough for the policy to act
    assert freeze(snap) == before == deep
    # Pure: the same input gives the same plan.
    again = decide(snap, config, 3000.0)
    assert again.decisions == plan.decisions
    assert dict(again.pending) == dict(plan.pending)
