"""Property: whatever allocate/release batches the controller sends, the allocations table never holds a
GPU twice and always matches the jobs' allocation JSON; a conflicting batch changes nothing."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.model.plan import Allocation
from scheduler.model.records import Batch, JobRecord
from scheduler.store.errors import AllocationConflict
from scheduler.store.schema import allocations
from scheduler.store.store import Store
from tests.store.helpers import allocation, running, spec

NODES = ("n0", "n1", "n2")
JOBS = 5
Gpu = tuple[str, int]

# One job's step: None releases its GPUs; a list of (node, gpu) takes exactly those (duplicates allowed,
# which must conflict).
steps = st.tuples(
    st.integers(0, JOBS - 1),
    st.none() | st.lists(st.tuples(st.sampled_from(NODES), st.integers(0, 3)), min_size=1, max_size=4),
)
batches = st.lists(st.lists(steps, min_size=1, max_size=4), min_size=1, max_size=6)


def _allocation(gpus: list[Gpu]) -> Allocation:
    by_node: dict[str, list[int]] = defaultdict(list)
    for node, gpu in gpus:
        by_node[node].append(gpu)
    return allocation(*((node, tuple(g)) for node, g in by_node.items()))


def _check(store: Store, records: list[JobRecord]) -> None:
    with store.engine.connect() as connection:
        query = sa.select(allocations.c.node, allocations.c.gpu, allocations.c.job_id)
        rows = connection.execute(query).all()
    assert len(rows) == len({(node, gpu) for node, gpu, _ in rows})  # never a GPU twice
    from_json = {
        (n.node, gpu): r.id
        for r in (store.get(record.id) for record in records)
        if r is not None and r.allocation is not None
        for n in r.allocation.nodes
        for gpu in n.gpus
    }
    assert {(node, gpu): str(job_id) for node, gpu, job_id in rows} == from_json


def test_allocations_stay_unique_and_match_the_jobs(store: Store) -> None:
    outcomes = {"applied": 0, "conflict": 0}

    @settings(
        max_examples=25,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(batches)
    def run(plan: list[list[tuple[int, list[Gpu] | None]]]) -> None:
        records = [store.submit(spec(name=f"p{i}"), "team-a", 0.0)[0] for i in range(JOBS)]
        held: dict[int, list[Gpu]] = {}  # the model: job index → GPUs
        try:
            for batch in plan:
                latest = dict(batch)  # the last step of a job in a batch wins
                proposed = {**held, **{i: gpus for i, gpus in latest.items() if gpus is not None}}
                for i, gpus in latest.items():
                    if gpus is None:
                        proposed.pop(i, None)
                taken = [gpu for gpus in proposed.values() for gpu in gpus]
                updates = [
                    running(records[i], None if gpus is None else _allocation(gpus)) for i, gpus in batch
                ]
                try:
                    store.apply(Batch(updates=updates))
                except AllocationConflict:
                    assert len(taken) != len(set(taken))
                    outcomes["conflict"] += 1
                else:
                    assert len(taken) == len(set(taken))
                    held = proposed
                    outcomes["applied"] += 1
                _check(store, records)
                assert set(store.held_gpus()) == {gpu for gpus in held.values() for gpu in gpus}
        finally:
            store.apply(Batch(updates=[running(r, None) for r in records]))

    run()
    assert min(outcomes.values()) > 0, outcomes  # both paths were exercised
