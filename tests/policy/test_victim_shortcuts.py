"""choose_victims ends most searches before walking the candidates in cost order: on the scan's
summary (no rule could take anyone), and, in a pool of at most preempt.ALL_AT_ONCE_UP_TO ×
max_victims candidates, when the job would not fit even with every candidate a rule may take gone
at once. Both must be certain: on any cluster, the search over the pool's VictimCandidates finds
exactly what a walk over the same candidates without them (a plain list) finds. (The second was
first dropped on 2026-12-05 because it made the cycle benchmark's searches scan every candidate of
a large pool; it came back the same day bounded by the pool's size, when the idle checks made
failed searches in contended replays common.)"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model.snapshot import RunningJob, usage_of
from scheduler.policy.config import PolicyConfig
from scheduler.policy.preempt import VictimCandidates, choose_victims
from scheduler.policy.quota import QuotaLedger
from tests.builders import cluster, job, queue, running, snapshot

NODES = cluster(racks=1, nodes_per_rack=4)  # 32 H100
QUEUES = [queue(q).quota(H100=8).cohort("c").build() for q in ("a", "b", "c")]
NOW = 100_000.0

# A running job: GPUs, how long it has run, attained GPU-seconds before, class, queue, on borrowed quota.
occupant = st.tuples(
    st.sampled_from([1, 2, 4, 8]),
    st.sampled_from([60.0, 700.0, 5_000.0]),
    st.sampled_from([0.0, 5_000.0, 50_000.0]),
    st.sampled_from(["low", "normal", "high"]),
    st.sampled_from(["a", "b", "c"]),
    st.booleans(),
)
preemptor = st.tuples(
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(["low", "normal", "high"]),
    st.sampled_from([(1, 1), (1, 2), (1, 4), (1, 8), (2, 8)]),  # nodes, GPUs per node
    st.sampled_from([0.0, 5_000.0, 50_000.0]),
)


def _place(rows: list[tuple[int, float, float, str, str, bool]]) -> list[RunningJob]:
    out: list[RunningJob] = []
    used = [0] * len(NODES)
    for k, (gpus, ran, attained, priority, q, borrowed) in enumerate(rows):
        at = next((i for i, u in enumerate(used) if u + gpus <= 8), None)
        if at is None:
            continue
        r = job(f"r{k}").queue(q).priority(priority).gpus(gpus).attained(attained).build()
        placed = running(r, [(NODES[at].id, list(range(used[at], used[at] + gpus)))], NOW - ran, on=NODES)
        if borrowed:
            placed = RunningJob(
                placed.job,
                placed.allocation.model_copy(update={"borrowed_gpus": gpus}),
                placed.pool,
                placed.started_at,
            )
        used[at] += gpus
        out.append(placed)
    return out


@settings(max_examples=400, deadline=None)
@given(
    st.lists(occupant, min_size=1, max_size=14),
    preemptor,
    st.sets(st.integers(0, 13), max_size=3),  # victims already taken this cycle
    st.sampled_from([1, 2, 64]),  # max_victims
)
def test_the_summary_never_misses_victims_a_full_walk_finds(
    rows: list[tuple[int, float, float, str, str, bool]],
    who: tuple[str, str, tuple[int, int], float],
    taken_at: set[int],
    max_victims: int,
) -> None:
    config = PolicyConfig(default_min_runtime_s=600.0, max_victims=max_victims)
    busy = _place(rows)
    q, priority, (nodes, per_node), attained = who
    waiting = job("w").queue(q).priority(priority).nodes(nodes).gpus(per_node if nodes == 1 else 8)
    waiting_job = waiting.attained(attained).build()
    snap = snapshot(NODES, [waiting_job], busy, queues=QUEUES, config=config)
    ledger = QuotaLedger(snap.queues, usage_of(busy))
    taken = {busy[i].id for i in taken_at if i < len(busy)}
    taken_gpus: dict[str, int] = {}
    for r in busy:
        if r.id in taken:
            taken_gpus[r.queue] = taken_gpus.get(r.queue, 0) + r.gpus
    pool = busy[0].pool
    found = VictimCandidates(snap, busy, NOW, config)
    args = (snap, snap.capacity, ledger, waiting_job, pool)
    rest = (taken, NOW, config, taken_gpus)
    with_shortcuts = choose_victims(*args, found, *rest)
    walked = choose_victims(*args, list(VictimCandidates(snap, busy, NOW, config)), *rest)
    assert with_shortcuts == walked
