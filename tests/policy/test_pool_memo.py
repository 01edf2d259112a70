"""What a cycle derives from one pool's running jobs is kept across cycles and brought up to date
when a few jobs started or ended (pool_memo.py): the drain order and the victim-candidate scan so
updated must be those a fresh computation gives, and cycles that lend the memo through a run of
such changes must decide exactly what cycles without it decide."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model.snapshot import RunningJob
from scheduler.policy import backfill
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from scheduler.policy.pool_memo import change_between
from scheduler.policy.preempt import rescan_candidates, scan_candidates
from tests.builders import cluster, job, running, snapshot
from tests.policy.test_candidate_scan import one_job as scanned_job

NODES = cluster(racks=1, nodes_per_rack=8, prefix="a") + cluster(
    racks=1, nodes_per_rack=8, gpu_type="A100", prefix="b"
)
CONFIG = PolicyConfig(default_min_runtime_s=600.0, las_thresholds_gpu_s=(3600.0, 36000.0))

# test_candidate_scan's running job (GPUs, age, attained GPU-s, preemptions, class, preemptible,
# queue), with a time limit (the drain order reads it) and a checkpoint interval (the cost does).
one_job = st.tuples(
    scanned_job, st.sampled_from([None, 3_600.0, 30_000.0]), st.sampled_from([None, 1_800.0])
).map(lambda t: (*t[0], t[1], t[2]))
ARRAY = "0-31%3"  # array a7: at most 3 of its tasks hold GPUs
Spec = tuple[int, float, float, int, str, bool, str, float | None, float | None]


def _running(spec: Spec, name: str, node: int, t0: float, array_task: int | None = None) -> RunningJob:
    gpus, age, attained, preemptions, priority, preemptible, queue_name, limit, interval = spec
    b = job(name).queue(queue_name).priority(priority).gpus(gpus).attained(attained)
    b = b.preemptible(preemptible).time_limit(limit)
    if array_task is not None:
        b = b.array(ARRAY, "a7", array_task)
    if preemptions:
        b = b.preemptions(preemptions)
    return running(
        b.build(), [(NODES[node].id, tuple(range(gpus)))], t0 - age, on=NODES, checkpoint_interval_s=interval
    )


@st.composite
def a_change(draw: st.DrawFn) -> tuple[list[RunningJob], list[RunningJob], float, float]:
    """A pool's running jobs before and after some jobs left and others came, and two times."""
    t0 = draw(st.floats(0, 50_000))
    before_specs = draw(st.lists(one_job, min_size=1, max_size=5))  # ≤ 8 changes: always updated
    before = [_running(s, f"old{i}", i, t0) for i, s in enumerate(before_specs)]
    keep = draw(st.lists(st.booleans(), min_size=len(before), max_size=len(before)))
    later = t0 + draw(st.floats(0, 5_000))
    added_specs = draw(st.lists(one_job, max_size=3))
    added = [_running(s, f"new{i}", i, later) for i, s in enumerate(added_specs)]
    kept = [r for r, k in zip(before, keep, strict=True) if k]
    # New jobs come anywhere in the list, as an owner's dict order may put them.
    after = list(kept)
    for r in added:
        after.insert(draw(st.integers(0, len(after))), r)
    return before, after, t0, later


@settings(max_examples=300, deadline=None)
@given(a_change())
def test_an_updated_scan_finds_what_a_fresh_scan_finds(
    case: tuple[list[RunningJob], list[RunningJob], float, float],
) -> None:
    before, after, t0, later = case
    snap = snapshot(NODES, [], before)
    first = scan_candidates(snap, before, t0, CONFIG)
    if not first.at <= later < first.valid_until:
        return  # the cycle rescans afresh then
    change = change_between(before, after)
    assert change is not None
    updated = rescan_candidates(first, after, change, snap, later, CONFIG)
    fresh = scan_candidates(snap, after, later, CONFIG)
    assert _by_job(updated.found) == _by_job(fresh.found)  # the same candidates, in any order
    assert updated.summary == fresh.summary
    assert updated.top == fresh.top
    assert updated.valid_until <= fresh.valid_until  # may be redone sooner, never later


@settings(max_examples=300, deadline=None)
@given(a_change())
def test_an_updated_drain_order_is_a_fresh_drain_order(
    case: tuple[list[RunningJob], list[RunningJob], float, float],
) -> None:
    before, after, _, _ = case
    change = change_between(before, after)
    assert change is not None
    updated = backfill.drain_order_after(backfill.drain_order(before), change)
    assert [r.id for r in updated] == [r.id for r in backfill.drain_order(after)]
    assert all(a is b for a, b in zip(updated, backfill.drain_order(after), strict=True))


def test_a_change_is_told_by_identity_and_too_big_a_one_is_not_updated() -> None:
    jobs = [
        _running((1, 10.0, 0.0, 0, "normal", True, "a", None, None), f"j{i}", i % 8, 100.0) for i in range(40)
    ]
    same_content = [replace(jobs[0])]  # equal, but a new object: the owner made it anew
    change = change_between(jobs[:1], same_content)
    assert change is not None and change.removed == {id(jobs[0])} and change.added == (same_content[0],)
    assert change_between(jobs[:20], jobs[20:]) is None  # 40 changes of 20 jobs: derived afresh


@settings(max_examples=150, deadline=None)
@given(
    st.lists(one_job, min_size=12, max_size=16),
    st.lists(st.tuples(st.integers(0, 15), st.floats(0, 300)), min_size=1, max_size=10),
)
def test_cycles_that_update_what_they_derive_decide_what_fresh_cycles_decide(
    specs: list[Spec], steps: list[tuple[int, float]]
) -> None:
    # Full nodes in both pools, so the waiting jobs preempt, reserve or wait; each step one job
    # ends or comes back, in one pool or the other, and time moves on a little (scans stay valid).
    config = PolicyConfig(default_min_runtime_s=600.0, las_thresholds_gpu_s=(36_000.0, 360_000.0))
    # Every fourth job is a task of array a7, which a pending task waits on when 3 of them run.
    present = [
        _running((8, *s[1:]), f"r{i}", i % 16, 0.0, array_task=i if i % 4 == 0 else None)
        for i, s in enumerate(specs)
    ]
    pending = [
        job("w-a").queue("a").priority("high").gpus(8).gpu_type("H100").build(),
        job("w-b").queue("b").priority("normal").gpus(4).gpu_type("A100").time_limit(3_600.0).build(),
        job("w-any").queue("b").priority("high").gpus(2).attained(100.0).build(),
        job("w-low").queue("a").priority("low").gpus(8).nodes(2).gpu_type("A100").build(),
        job("a7.31").queue("a").priority("high").gpus(1).array(ARRAY, "a7", 31).build(),
    ]
    memo: dict[object, object] = {}
    now = 0.0
    current = list(present)
    for version, (pick, step) in enumerate(steps):
        now += step
        r = present[pick % len(present)]
        if any(c is r for c in current):
            current = [c for c in current if c is not r]
        elif all(c.allocation.nodes[0].node != r.allocation.nodes[0].node for c in current):
            current.append(r)
        fresh = snapshot(NODES, pending, current, config=config)
        lent = replace(fresh, running_version=version, memo=memo)
        assert decide(lent, config, now) == decide(fresh, config, now)


def _by_job(
    found: tuple[tuple[RunningJob, int, bool, int], ...],
) -> dict[int, tuple[RunningJob, int, bool, int]]:
    return {id(f[0]): f for f in found}
