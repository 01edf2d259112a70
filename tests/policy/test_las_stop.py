"""A las cycle lent the pending shapes (the simulator's) stops walking once no pending job could win
GPUs and no running job left to rank could keep them: it must decide what a full walk decides."""

from __future__ import annotations

from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model.plan import Place
from scheduler.policy import baselines
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from tests.builders import job, running
from tests.policy.walks import NODES, NOW, narrow_job, pending_job, pending_jobs, plain_and_lent

LAS = PolicyConfig(name="las")


# A running job: its node, GPUs (from GPU 0 up), queue, how long it has run, attained GPU-seconds,
# and whether it is leaving (preempted, in its grace period).
running_job = st.tuples(
    st.integers(0, 3),
    st.sampled_from([1, 2, 4, 8]),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from([30.0, 300.0, 5_000.0]),
    st.sampled_from([0.0, 5_000.0, 50_000.0]),
    st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(pending_job, min_size=1, max_size=90) | st.lists(narrow_job, min_size=1, max_size=90),
    st.lists(running_job, max_size=6),
    st.booleans(),  # an impossible job waits too (a full walk rejects it)
    st.integers(1, 60),  # scan depth
)
def test_a_las_cycle_that_stops_early_decides_what_a_full_walk_decides(
    rows: list,  # type: ignore[type-arg]
    occupants: list[tuple[int, int, str, float, float, bool]],
    impossible: bool,
    depth: int,
) -> None:
    config = LAS.model_copy(update={"scan_depth": depth})
    pending = pending_jobs(rows)
    if impossible:
        pending.append(job("huge").queue("b").gpus(8).nodes(8).submitted(NOW - 50).build())
    held: dict[int, int] = {}
    busy = []
    for k, (at, gpus, q, ran, attained, leaving) in enumerate(occupants):
        first = held.get(at, 0)
        if first + gpus > 8:
            continue  # that node has no room left for it
        held[at] = first + gpus
        r = job(f"r{k}").queue(q).gpus(gpus).attained(attained).build()
        where = [(NODES[at].id, list(range(first, first + gpus)))]
        busy.append(running(r, where, NOW - ran, on=NODES, preempting=leaving))
    plain, lent = plain_and_lent(pending, busy, config)
    walked = decide(plain, config, NOW)
    decided = decide(lent, config, NOW)
    assert decided.decisions == walked.decisions
    assert decided.examined == walked.examined


@pytest.mark.interpreted_only  # spies on the cycle's internals with mock.patch
def test_a_full_cluster_stops_the_walk_at_once() -> None:
    """Every GPU held by long-running jobs of the lowest level and 500 jobs waiting: the running
    jobs keep their GPUs, and the cycle does not look at the pending ones past the first."""
    busy = [
        running(job(f"r{i}").queue("ab"[i % 2]).gpus(8).build(), [n.id], NOW - 10.0, on=NODES)
        for i, n in enumerate(NODES)
    ]
    pending = [job(f"p{i}").queue("ab"[i % 2]).gpus(1 + i % 2).submitted(NOW - i).build() for i in range(500)]
    config = LAS.model_copy(update={"scan_depth": 10_000})
    plain, lent = plain_and_lent(pending, busy, config)
    walked = decide(plain, config, NOW)
    with patch.object(baselines, "las_level", side_effect=baselines.las_level) as levels:
        decided = decide(lent, config, NOW)
    assert decided.decisions == walked.decisions == ()
    assert decided.examined == walked.examined == len(pending)
    assert levels.call_count < 20, levels.call_count  # the full walk asks the level of all 500


@pytest.mark.parametrize("impossible", [False, True])
def test_the_walk_goes_on_while_a_running_job_could_keep_its_gpus_or_a_job_must_be_rejected(
    impossible: bool,
) -> None:
    """A running 1-GPU job of level 0 ranks first and keeps its GPU; pending 2-GPU jobs of level 0
    take 30 of the 31 GPUs left, and no pending job fits the last one; but a running 1-GPU job
    further down the ranking does: it keeps its GPU, and only the 8-GPU job is preempted. An
    impossible job at the back of the line is rejected."""
    first = running(job("first").queue("c").gpus(1).build(), [(NODES[2].id, [0])], NOW - 900, on=NODES)
    big = job("r-big").queue("a").gpus(8).attained(50_000.0).submitted(NOW - 9_000).build()
    small = job("r-small").queue("b").gpus(1).attained(50_000.0).submitted(NOW - 8_000).build()
    busy = [
        first,
        running(big, [NODES[1].id], NOW - 5_000, on=NODES),
        running(small, [(NODES[0].id, [0])], NOW - 5_000, on=NODES),
    ]
    pending = [
        job(f"p{i:02d}").queue("abc"[i % 3]).gpus(2).submitted(NOW - 100 + i).build() for i in range(16)
    ]
    if impossible:
        pending.append(job("huge").queue("a").gpus(8).nodes(8).submitted(NOW - 10).build())
    plain, lent = plain_and_lent(pending, busy, LAS)
    walked = decide(plain, LAS, NOW)
    expected = [("Reject", "huge")] if impossible else []
    assert [(type(d).__name__, d.job_id) for d in walked.decisions if not isinstance(d, Place)] == [
        *expected,
        ("Preempt", "r-big"),
    ]
    assert decide(lent, LAS, NOW).decisions == walked.decisions
