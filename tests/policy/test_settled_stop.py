"""A cycle lent the pending jobs' shapes (the simulator's, model/pending_shapes.py) stops once
no job left can change anything: it must decide exactly what a cycle that walks them all
decides, and it must actually stop early in a deep backlog of jobs that can only wait."""

from __future__ import annotations

from dataclasses import replace
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model.job import Job
from scheduler.model.pending_shapes import PendingShapes
from scheduler.model.snapshot import ClusterSnapshot
from scheduler.policy import cycle
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from scheduler.policy.order import las_level
from tests.builders import cluster, job, queue, running, snapshot
from tests.policy.walks import occupants, pending_job, pending_jobs

NODES = cluster(racks=1, nodes_per_rack=4)  # 32 GPUs
CONFIG = PolicyConfig(default_min_runtime_s=600.0)
QUEUES = [queue(q).quota(H100=16).cohort("c").build() for q in ("a", "b", "c")]


def _shapes(pending: list[Job], config: PolicyConfig) -> PendingShapes:
    th = config.las_thresholds_gpu_s
    shapes = PendingShapes(th, lambda attained: las_level(attained, th))
    for j in pending:
        shapes.add(j)
    return shapes


def _lent(snap: ClusterSnapshot, pending: list[Job], config: PolicyConfig) -> ClusterSnapshot:
    return replace(snap, pending_shapes=_shapes(pending, config))


@pytest.mark.interpreted_only  # sets a class constant of the cycle with mock.patch
@settings(max_examples=150, deadline=None)
@given(
    st.lists(pending_job, min_size=1, max_size=80),
    st.integers(0, 4),  # nodes left busy
    st.sampled_from([0.0, 300.0, 5_000.0]),  # how long the busy ones have run
    st.integers(1, 60),  # scan depth
    st.sampled_from([1, 32]),  # memo hits before it first looks (1: after every one)
)
def test_a_cycle_that_stops_when_settled_decides_what_a_full_walk_decides(
    rows: list,  # type: ignore[type-arg]
    busy: int,
    ran: float,
    depth: int,
    settle_after: int,
) -> None:
    now = 100_000.0
    pending = pending_jobs(rows, now)
    config = CONFIG.model_copy(update={"scan_depth": depth})
    full = snapshot(NODES, pending, occupants(busy, ran), queues=QUEUES, config=config)
    walked = decide(full, config, now)
    with patch.object(cycle._Settled, "SETTLE_AFTER", settle_after):
        stopped = decide(_lent(full, pending, config), config, now)
    assert stopped.decisions == walked.decisions
    assert stopped.examined <= walked.examined


def test_a_deep_backlog_that_can_only_wait_is_not_walked_to_the_scan_depth() -> None:
    """900 jobs of 8 shapes (two queues, 1-4 GPUs, old enough for an unbounded reservation or
    not), nothing free and nobody preemptible: once a job of each shape has waited, it stops.
    (Jobs beyond the scan depth count too: their keys must be known as well.)"""
    now = 100_000.0
    occupants = [
        running(job(f"r{i}").queue("ab"[i % 2]).gpus(8).preemptible(False).build(), [n.id], now, on=NODES)
        for i, n in enumerate(NODES)
    ]
    pending = [
        job(f"p{i}").queue("ab"[i % 2]).gpus(1 + i % 4).submitted(now - 2 * i).build() for i in range(900)
    ]
    full = snapshot(NODES, pending, occupants, queues=QUEUES, config=CONFIG)
    walked = decide(full, CONFIG, now)
    stopped = decide(_lent(full, pending, CONFIG), CONFIG, now)
    assert walked.decisions == stopped.decisions == ()
    assert walked.examined == len(pending)
    assert stopped.examined < 100, stopped.examined
