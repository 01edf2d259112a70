"""The simulator keeps its running jobs by pool between cycles and says what changed in each pool
(model/running_pools.py): the lists it lends must be the grouping a cycle would make of the
running-jobs mapping, in its order; a pool untouched since the last snapshot keeps its very list
(so that what a cycle derived from it is reused); and the change it tells must be the one a
comparison of the two lists finds."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model.running_pools import RunningPools
from scheduler.model.snapshot import RunningJob
from scheduler.policy.pool_memo import change_between
from tests.builders import cluster, job, running

NODES = cluster(racks=1, nodes_per_rack=2, prefix="a") + cluster(
    racks=1, nodes_per_rack=2, gpu_type="A100", prefix="b"
)

# (what, job number, node): start (or restart) a job, change a running one (a new object in its
# place, as a preemption does), end one, or take a snapshot.
step = st.tuples(
    st.sampled_from(["put", "put", "change", "remove", "lend"]), st.integers(0, 11), st.integers(0, 3)
)


def _running(k: int, node: int, version: int) -> RunningJob:
    r = job(f"j{k}").gpus(1).build()
    return running(r, [(NODES[node].id, [k % 8])], 1_000.0 + version, on=NODES)


def _grouped(jobs: dict[str, RunningJob]) -> dict[object, list[RunningJob]]:
    grouped: dict[object, list[RunningJob]] = {}
    for r in jobs.values():
        grouped.setdefault(r.pool, []).append(r)
    return grouped


def _same(a: Sequence[RunningJob], b: Sequence[RunningJob]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=60))
def test_lent_lists_and_changes_are_what_a_cycle_would_work_out(steps: list[tuple[str, int, int]]) -> None:
    pools = RunningPools()
    jobs: dict[str, RunningJob] = {}  # the owner's mapping, as the simulator keeps it
    lent: dict[object, Sequence[RunningJob]] = {}
    for version, (what, k, node) in enumerate(steps):
        name = f"j{k}"
        if what == "put" and name not in jobs:
            r = _running(k, node, version)
            pools.put(None, r)
            jobs[name] = r
        elif what == "change" and name in jobs:
            old = jobs[name]
            new = RunningJob(old.job, old.allocation, old.pool, old.started_at + 1.0)
            pools.put(old, new)
            jobs[name] = new
        elif what == "remove" and name in jobs:
            pools.remove(jobs.pop(name))
        elif what == "lend":
            by_pool, changes = pools.lend()
            expected = _grouped(jobs)
            assert set(by_pool) == set(expected)
            for pool, listed in by_pool.items():
                assert _same(listed, expected[pool])
                if pool not in changes:  # untouched: the very list lent before
                    assert listed is lent[pool]
            for pool, (before, change) in changes.items():
                assert before is lent.get(pool, before)  # what the last snapshot held, if any
                found = change_between(before, by_pool.get(pool, ()))
                assert (change is None) == (found is None)
                if change is not None and found is not None:
                    assert {id(r) for r in change.added} == {id(r) for r in found.added}
                    assert {id(r) for r in change.gone} == {id(r) for r in found.gone}
                    assert change.removed == found.removed
            lent = dict(by_pool)
