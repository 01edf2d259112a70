"""The group walk (policy/group_walk.py) yields exactly the jobs the plain merge reaches with an
unknown outcome, in the same order and at the same state, and counts the ones it passes over:
checked merger against merger, and whole cycles against whole cycles."""

from __future__ import annotations

from dataclasses import replace
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model.pending_shapes import PendingShapes, Shape
from scheduler.policy import cycle
from scheduler.policy.decide import decide
from scheduler.policy.group_walk import GroupMerger
from scheduler.policy.order import FairShare, QueueMerger, las_level, pending_key
from tests.builders import job, running, snapshot
from tests.policy.walks import (
    CONFIG,
    NODES,
    NOW,
    QUEUES,
    KnownSet,
    narrow_job,
    occupants,
    pending_job,
    pending_jobs,
    plain_and_lent,
    shapes_of,
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(pending_job, min_size=1, max_size=90) | st.lists(narrow_job, min_size=1, max_size=90),
    st.integers(0, 4),  # nodes busy
    # the consumer's actions, in turn (mostly: learn the outcome)
    st.lists(st.sampled_from([0, 1, 1, 1, 2, 3, 4]), min_size=1, max_size=30),
)
def test_the_group_walk_yields_what_the_merge_reaches_with_an_unknown_outcome(
    rows: list,  # type: ignore[type-arg]
    busy: int,
    actions: list[int],
) -> None:
    """Both mergers, driven alike: a job yielded makes its outcome known (action 1-3), also hands
    its queue GPUs (2: its ranks and tiers change), or forgets every outcome (0: a decision), or
    nothing (4-5). The group walk must yield the same jobs in the same order, with as many jobs
    passed over before each as the merge found known."""
    pending = pending_jobs(rows)
    snap = snapshot(NODES, pending, occupants(busy, 300.0), queues=QUEUES, config=CONFIG)
    shapes = shapes_of(snap, pending, CONFIG)
    key = pending_key(CONFIG, {n: pc.value for n, pc in snap.priority_classes.items()})

    def drive(grouped: bool) -> list[tuple[str, int]]:
        fair = FairShare(snap, CONFIG)
        known: set[tuple[str, Shape, bool]] = set()
        outcomes = KnownSet()  # the same, as the group walk asks it

        merger: QueueMerger
        if grouped:
            merger = GroupMerger(snap, CONFIG, NOW, key, fair, None, shapes, outcomes)
        else:
            merger = QueueMerger(snap, CONFIG, NOW, key, fair)
        seen: list[tuple[str, int]] = []
        passed = 0
        for j in merger:
            where = (j.spec.queue, shapes.shape(j), NOW - j.submitted_at >= CONFIG.reserve_unbounded_after_s)
            if not grouped and where in known:
                passed += 1
                continue
            seen.append((j.id, passed + merger.passed_over()))
            passed = 0
            action = actions[len(seen) % len(actions)]
            if action == 0:
                known.clear()
                outcomes.forget_all()
            elif action <= 3:
                known.add(where)
                outcomes.learn(*where)
            if action == 2:
                fair.add(j.spec.queue, "H100", j.spec.gpus)
        seen.append(("end", passed + merger.passed_over()))
        return seen

    assert drive(grouped=True) == drive(grouped=False)


@pytest.mark.interpreted_only  # spies on the cycle's internals with mock.patch
@settings(max_examples=150, deadline=None)
@given(
    st.lists(pending_job, min_size=1, max_size=90) | st.lists(narrow_job, min_size=1, max_size=90),
    st.integers(0, 4),  # nodes left busy
    st.sampled_from([0.0, 300.0, 5_000.0]),  # how long the busy ones have run
    st.integers(1, 60),  # scan depth
)
def test_a_cycle_that_walks_groups_decides_and_counts_what_a_plain_walk_does(
    rows: list,  # type: ignore[type-arg]
    busy: int,
    ran: float,
    depth: int,
) -> None:
    config = CONFIG.model_copy(update={"scan_depth": depth})
    pending = pending_jobs(rows)
    plain, lent = plain_and_lent(pending, occupants(busy, ran), config)
    walked = decide(plain, config, NOW)
    with patch.object(GroupMerger, "__iter__", autospec=True, side_effect=_GROUP_ITER) as grouped:
        decided = decide(lent, config, NOW)
    assert grouped.call_count == 1  # the group walk was taken
    assert decided.decisions == walked.decisions
    # It examines the same jobs (it only does not look at those it passes over).
    assert decided.examined == walked.examined


_GROUP_ITER = GroupMerger.__iter__


@pytest.mark.interpreted_only  # spies on the cycle's internals with mock.patch
def test_a_deep_backlog_is_passed_over_in_runs_not_job_by_job() -> None:
    """600 jobs of 4 shapes in two queues, nothing free and nobody preemptible: after one job of
    each shape, the rest only wait; the group walk ranks a few jobs per run it passes, not each."""
    full = [
        running(job(f"r{i}").queue("ab"[i % 2]).gpus(8).preemptible(False).build(), [n.id], NOW, on=NODES)
        for i, n in enumerate(NODES)
    ]
    pending = [
        job(f"p{i}").queue("ab"[i % 2]).gpus(1 + i % 2).submitted(NOW - 2 * i).build() for i in range(600)
    ]
    config = CONFIG.model_copy(update={"scan_depth": 10_000})
    plain, lent = plain_and_lent(pending, full, config)
    walked = decide(plain, config, NOW)
    with patch.object(cycle, "_outcome_key", side_effect=cycle._outcome_key) as keyed:
        decided = decide(lent, config, NOW)
    assert decided.decisions == walked.decisions == ()
    assert decided.examined == walked.examined == len(pending)
    assert keyed.call_count < 20, keyed.call_count  # the plain walk keys all 600


@pytest.mark.interpreted_only  # spies on the cycle's internals with mock.patch
def test_the_plain_merge_is_kept_where_the_group_walk_could_order_differently() -> None:
    """Two jobs of a group sorted by their tie-break alone though submitted at different times
    (the cycle's rank would then put them the other way round), or a capped array task waiting
    (each must be looked at): the cycle merges job by job, as without shapes."""
    th = CONFIG.las_thresholds_gpu_s
    tied = PendingShapes(th, lambda a: las_level(a, th), lambda j: (0.0, j.id), "any")
    tied.add(job("x1").queue("a").submitted(NOW - 5).build())
    tied.add(job("x2").queue("a").submitted(NOW - 9).build())
    assert tied.order_ties == 1

    pending = [job(f"p{i}").queue("ab"[i % 2]).submitted(NOW - i).build() for i in range(6)]
    capped = job("t1").queue("a").array("0-3%1", "t", 1).build()
    plain = snapshot(NODES, [*pending, capped], queues=QUEUES, config=CONFIG)
    shapes = shapes_of(plain, [*pending, capped], CONFIG)
    assert shapes.capped_tasks == 1
    with patch.object(GroupMerger, "__iter__", autospec=True, side_effect=_GROUP_ITER) as grouped:
        assert (
            decide(replace(plain, pending_shapes=shapes), CONFIG, NOW).decisions
            == decide(plain, CONFIG, NOW).decisions
        )
    assert grouped.call_count == 0
    shapes.remove(capped)
    assert shapes.capped_tasks == 0


@pytest.mark.parametrize("waited", [1_000.0, 5_000.0])  # all too young, or all old enough, to reserve
def test_the_walk_stops_early_only_once_every_outcome_left_is_known(waited: float) -> None:
    """Two queues' jobs alternate, all of known outcome but the last one: the walk must pass over
    200 jobs in many short runs and still reach it; with it known too, the walk passes them all."""
    pending = [job(f"x{i:03d}").queue("ab"[i % 2]).submitted(NOW - waited + i).build() for i in range(200)]
    pending.append(job("last").queue("a").gpus(2).submitted(NOW - waited + 300).build())
    snap = snapshot(NODES, pending, queues=QUEUES, config=CONFIG)
    shapes = shapes_of(snap, pending, CONFIG)
    key = pending_key(CONFIG, {n: pc.value for n, pc in snap.priority_classes.items()})
    others = {shapes.shape(j) for j in pending[:-1]}
    for known, expected, tail in (
        (others, [("last", 200)], 0),
        ({*others, shapes.shape(pending[-1])}, [], 201),
    ):
        merger = GroupMerger(
            snap,
            CONFIG,
            NOW,
            key,
            FairShare(snap, CONFIG),
            None,
            shapes,
            KnownSet(lambda q, s, old, k=known: s in k),
        )
        assert [(j.id, merger.passed_over()) for j in merger] == expected
        assert merger.passed_over() == tail
