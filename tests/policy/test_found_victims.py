"""CycleState.victims_for keeps the last search that found victims for a job and pool: the idle
check finds them, and the walk asks again when it reaches the job. The answer must be what a fresh
search would find whenever it is given again, including after a hold that takes only GPUs still
leaving (which changes what the search starts from without moving the cycle's `changes`)."""

from __future__ import annotations

from scheduler.model.cluster import PoolKey
from scheduler.model.job import Job
from scheduler.model.plan import Allocation, NodeAllocation
from scheduler.policy import cycle
from scheduler.policy.preempt import search_victims
from tests.builders import job, running, snapshot
from tests.policy.walks import CONFIG, NODES, NOW


def _fresh(state: cycle.CycleState, waiting_job: Job, pool: PoolKey) -> list[str] | None:
    """The victims a search from the state as it stands finds, with no memo in between."""
    victims, _ = search_victims(
        state.snapshot,
        state.victim_search_capacity(pool),
        state.ledger,
        waiting_job,
        pool,
        state.candidates_in(pool),
        state.victims_taken,
        state.now,
        state.config,
        state.taken_gpus.get(pool.gpu_type, {}),
        state.preempted_refunds.get(pool.gpu_type),
    )
    return None if victims is None else sorted(v.id for v in victims.jobs)


def test_a_kept_search_is_given_only_while_what_it_read_is_unchanged() -> None:
    # Node 0 is leaving (a job in its grace period), nodes 1 and 2 run low-priority jobs, node 3 a
    # job nobody may preempt. A 2-node gang of a higher class needs node 0 and one victim.
    leaver = job("leaver").queue("a").gpus(8).build()
    held = [
        running(leaver, [NODES[0].id], NOW - 5_000, on=NODES, preempting=True),
        running(job("low1").queue("a").priority("low").gpus(8).build(), [NODES[1].id], NOW - 5_000, on=NODES),
        running(job("low2").queue("a").priority("low").gpus(8).build(), [NODES[2].id], NOW - 4_000, on=NODES),
        running(job("keep").queue("a").gpus(8).preemptible(False).build(), [NODES[3].id], NOW, on=NODES),
    ]
    gang = job("gang").queue("a").priority("high").nodes(2).gpus(8).build()
    state = cycle.CycleState.start(snapshot(NODES, [gang], held, config=CONFIG), CONFIG, NOW)
    pool = NODES[0].pool
    first, _ = state.victims_for(gang, pool)
    assert first is not None and len(first.jobs) == 1
    again, _ = state.victims_for(gang, pool)
    assert again is first  # nothing changed: the kept answer
    # Another job holds node 0 for when the leaver is gone: none of its GPUs is free now, so
    # `changes` stays, but the gang now needs both low jobs.
    changes = state.changes
    state.hold(pool, Allocation(nodes=(NodeAllocation(node=NODES[0].id, gpus=tuple(range(8))),)))
    assert state.changes == changes
    after, _ = state.victims_for(gang, pool)
    assert after is not None
    assert sorted(v.id for v in after.jobs) == _fresh(state, gang, pool) == ["low1", "low2"]
