"""A cycle lent pending shapes by an owner that reads only the decisions that change its cluster
(the simulator) does not start, or stops early, once no job left could be placed, preempt or be
rejected (policy/cycle.py: _activity). It must make exactly the placements, preemptions and
rejections of a cycle that walks on to the end: checked cycle against cycle, and whole replays
against whole replays (the replays also check the shapes kept idle from one cycle to the next)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model.plan import Place, Plan, Preempt, Reject
from scheduler.policy import cycle
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from scheduler.sim.records import RunResult
from scheduler.sim.runner import SimOptions, Simulator
from tests.builders import job, queue, run_bounded, running, snapshot
from tests.policy.walks import (
    CONFIG,
    NODES,
    NOW,
    narrow_job,
    occupants,
    pending_job,
    pending_jobs,
    plain_and_lent,
)
from tests.sim.test_properties import MAX_CYCLES, SETTINGS, World, worlds


def effects(plan: Plan) -> list[Place | Preempt | Reject]:
    return [d for d in plan.decisions if isinstance(d, (Place, Preempt, Reject))]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(pending_job, min_size=1, max_size=90) | st.lists(narrow_job, min_size=1, max_size=90),
    st.integers(0, 4),  # nodes left busy
    st.sampled_from([0.0, 300.0, 5_000.0]),  # how long the busy ones have run
    st.integers(1, 60),  # scan depth
    st.sampled_from([1, 2, 64]),  # max victims: a search cut short reads its candidates' order
)
def test_a_cycle_that_stops_when_idle_places_and_preempts_what_a_full_walk_does(
    rows: list,  # type: ignore[type-arg]
    busy: int,
    ran: float,
    depth: int,
    max_victims: int,
) -> None:
    config = CONFIG.model_copy(update={"scan_depth": depth, "max_victims": max_victims})
    pending = pending_jobs(rows)
    plain, lent = plain_and_lent(pending, occupants(busy, ran), config, effects_only=True)
    assert effects(decide(lent, config, NOW)) == effects(decide(plain, config, NOW))


def test_a_full_cluster_nobody_may_preempt_is_not_walked() -> None:
    """Every node busy with jobs nobody may preempt: the cycle finds at once that no pending job
    can act, and examines none of them (the full walk examines all 300 and reserves)."""
    full = [
        running(job(f"r{i}").queue("ab"[i % 2]).gpus(8).preemptible(False).build(), [n.id], NOW, on=NODES)
        for i, n in enumerate(NODES)
    ]
    pending = [
        job(f"p{i}").queue("ab"[i % 2]).gpus(1 + i % 2).submitted(NOW - 2 * i).build() for i in range(300)
    ]
    config = CONFIG.model_copy(update={"scan_depth": 10_000})
    plain, lent = plain_and_lent(pending, full, config, effects_only=True)
    walked, idle = decide(plain, config, NOW), decide(lent, config, NOW)
    assert effects(walked) == effects(idle) == []
    assert walked.examined == len(pending)
    assert idle.examined == 0 and idle.decisions == ()


def test_a_job_that_fits_is_placed_though_the_rest_are_idle() -> None:
    """One node free: the one-GPU jobs behind the big ones still start."""
    busy = [
        running(job(f"r{i}").queue("a").gpus(8).preemptible(False).build(), [n.id], NOW, on=NODES)
        for i, n in enumerate(NODES[:-1])
    ]
    pending = [job(f"big{i}").queue("a").nodes(2).gpus(8).submitted(NOW - 10 - i).build() for i in range(5)]
    pending += [job(f"small{i}").queue("b").gpus(1).submitted(NOW - i).build() for i in range(3)]
    config = CONFIG.model_copy(update={"scan_depth": 10_000})
    plain, lent = plain_and_lent(pending, busy, config, effects_only=True)
    decided = effects(decide(lent, config, NOW))
    assert decided == effects(decide(plain, config, NOW))
    assert sorted(d.job_id for d in decided) == ["small0", "small1", "small2"]


def replay(world: World, effects_only: bool) -> RunResult:
    sim = Simulator(world.cluster, world.jobs, PolicyConfig(name="corral"), SimOptions(record_spans=True))
    assert sim._shapes is not None  # no observer: the replay walks shapes
    sim._shapes.effects_only = effects_only
    return run_bounded(sim, MAX_CYCLES)


@SETTINGS
@given(worlds())
def test_a_replay_that_skips_idle_cycles_schedules_what_a_full_replay_does(world: World) -> None:
    """Whole replays, cycle after cycle: the shapes found idle are kept across cycles while nothing
    they read changed (tests the keeping as well as each cycle's stop)."""
    fast, full = replay(world, effects_only=True), replay(world, effects_only=False)
    assert fast.cycles == full.cycles
    assert fast.spans == full.spans
    assert fast.records == full.records
    assert fast.preemption_log == full.preemption_log
    assert fast.rejected == full.rejected
    assert fast.timeline == full.timeline


def test_a_search_cut_at_max_victims_counts_as_a_maybe() -> None:
    """The first victim alone frees one node of the two the job needs, and the search may take
    only one: it finds nothing, but another state (fewer rules applying) could put a different
    candidate first, so the cycle may not stop on it."""
    config = CONFIG.model_copy(update={"max_victims": 1})
    held = [
        running(job(f"low{i}").queue("a").priority("low").gpus(8).build(), [n.id], NOW - 5_000, on=NODES)
        for i, n in enumerate(NODES[:2])
    ]
    held += [
        running(job(f"keep{i}").queue("a").gpus(8).preemptible(False).build(), [n.id], NOW, on=NODES)
        for i, n in enumerate(NODES[2:])
    ]
    waiting = job("gang").queue("a").priority("high").nodes(2).gpus(8).build()
    state = cycle.CycleState.start(snapshot(NODES, [waiting], held, config=config), config, NOW)
    assert cycle._activity(state, [waiting]) == cycle._MAY_ACT
    wider = CONFIG.model_copy(update={"max_victims": 2})  # both found: it would preempt
    state = cycle.CycleState.start(snapshot(NODES, [waiting], held, config=wider), wider, NOW)
    assert cycle._activity(state, [waiting]) == cycle._MAY_ACT


def test_a_search_that_left_a_borrower_out_holds_only_for_now() -> None:
    """Queue r borrows 8 GPUs: a reclaim may take one of its two jobs, not both, and which one
    comes first moves with the clock (the work each would lose). Two nodes are needed, so nothing
    is found now, but that is not kept for later cycles. (Reclaim alone: no service preemption.)"""
    config = CONFIG.model_copy(update={"service_preemption": False})
    queues = [
        queue("a").quota(H100=16).cohort("c").build(),
        queue("r").quota(H100=8).cohort("c").build(),
        queue("z").quota(H100=16).build(),
    ]
    held = [
        running(job(f"r{i}").queue("r").gpus(8).build(), [NODES[i].id], NOW - 5_000 + i, on=NODES)
        for i in range(2)
    ]
    held += [
        running(job(f"z{i}").queue("z").gpus(8).preemptible(False).build(), [n.id], NOW, on=NODES)
        for i, n in enumerate(NODES[2:])
    ]
    waiting = job("gang").queue("a").nodes(2).gpus(8).build()
    snap = snapshot(NODES, [waiting], held, queues=queues, config=config)
    state = cycle.CycleState.start(snap, config, NOW)
    assert cycle._activity(state, [waiting]) == cycle._IDLE_NOW
    assert effects(decide(snap, config, NOW)) == []
