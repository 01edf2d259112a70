"""`corral check`'s pure invariants on hand-built states: a clean state is clean, and each kind of
violation is found with the ids involved; the second reading tells an operation in flight from a
violation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from scheduler.check import RayActor, RayGroup, RayState, StoreState, Violation, check, find_violations
from scheduler.check import invariants as inv
from scheduler.model.cluster import Node
from scheduler.model.job import Job, JobSpec, JobState
from scheduler.model.plan import Allocation, NodeAllocation
from scheduler.model.queue import Queue
from scheduler.model.records import JobRecord, StopReason

NODES = {
    "n1": Node(id="n1", region="ra", rack="ra/r1", gpu_type="H100"),
    "n2": Node(id="n2", region="ra", rack="ra/r1", gpu_type="H100"),
    "n3": Node(id="n3", region="rb", rack="rb/r1", gpu_type="A100"),
}
QUEUES = (Queue(name="q", quota={"H100": 16, "A100": 8}),)


def _job(
    job_id: str,
    where: dict[str, Sequence[int]],
    state: JobState = JobState.RUNNING,
    *,
    queue: str = "q",
    region: str = "any",
    attempt: int = 0,
    stop: StopReason | None = None,
    nodes: int | None = None,
    gpus_per_node: int | None = None,
) -> JobRecord:
    first = next(iter(where.values()), ())
    spec = JobSpec(
        command=["true"],
        queue=queue,
        nodes=nodes or max(1, len(where)),
        gpus_per_node=gpus_per_node or max(1, len(first)),
        data_region=region,
    )
    job = Job(id=job_id, spec=spec, state=state, restart_count=attempt, started_at=1.0)
    alloc = Allocation(nodes=tuple(NodeAllocation(node=n, gpus=tuple(g)) for n, g in where.items()))
    return JobRecord(job=job, allocation=alloc if where else None, stop_reason=stop)


def _rows(*jobs: JobRecord) -> dict[tuple[str, int], tuple[str, int]]:
    return {
        (na.node, g): (r.id, r.job.restart_count)
        for r in jobs
        if r.allocation is not None
        for na in r.allocation.nodes
        for g in na.gpus
    }


def _store(*jobs: JobRecord, usage: dict[str, int] | None = None, **kw: object) -> StoreState:
    holding = [j for j in jobs if j.allocation is not None]
    counted: dict[str, int] = {}
    for j in holding:
        assert j.allocation is not None
        counted[j.job.spec.queue] = counted.get(j.job.spec.queue, 0) + j.allocation.gpus
    kw.setdefault("queues", QUEUES)
    kw.setdefault("allocation_rows", _rows(*holding))
    return StoreState(jobs=list(jobs), usage=counted if usage is None else usage, **kw)  # type: ignore[arg-type]


def _ray(
    *jobs: JobRecord,
    used: dict[str, float] | None = None,
    nodes: dict[str, Node] = NODES,
    **kw: object,
) -> RayState:
    """Ray as it is when every job's placement group and actors exist (override to break it)."""
    groups, actors, held = [], [], {n: 0.0 for n in NODES}
    for r in jobs:
        if r.allocation is None:
            continue
        attempt = r.job.restart_count
        name = f"corral-{r.id}-{attempt}"
        groups.append(
            RayGroup(
                name, r.id, attempt, "CREATED", tuple((na.node, len(na.gpus)) for na in r.allocation.nodes)
            )
        )
        actors += [RayActor(f"{name}-r{i}", r.id, attempt, i) for i in range(r.job.spec.nodes)]
        for na in r.allocation.nodes:
            held[na.node] += len(na.gpus)
    kw.setdefault("groups", groups)
    kw.setdefault("actors", actors)
    return RayState(nodes=nodes, used_gpus=held if used is None else used, **kw)  # type: ignore[arg-type]


def _kinds(found: list[Violation]) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    return [(v.kind, v.jobs, v.nodes) for v in found]


A = _job("1", {"n1": [0, 1]}, region="ra")
B = _job("2", {"n1": [2, 3], "n2": [2, 3]}, state=JobState.RUNNING)  # a 2-node gang
C = _job("3", {"n3": [0]}, state=JobState.STARTING)
P = _job("4", {}, state=JobState.PENDING)


def test_a_healthy_state_is_clean() -> None:
    assert find_violations(_store(A, B, C, P), _ray(A, B, C)) == []
    assert find_violations(_store(A, B, C, P)) == []  # the store alone too


def test_a_gpu_held_by_two_jobs_names_both_and_the_gpu() -> None:
    twin = _job("5", {"n1": [1, 4]})
    found = inv.gpus_held_twice([A, B, twin])
    assert _kinds(found) == [(inv.GPU_HELD_TWICE, ("1", "5"), ("n1",))]
    assert "GPU 1 of node n1" in found[0].message and not found[0].settles
    store = _store(A, twin, allocation_rows=_rows(A) | {("n1", 4): ("5", 0)})  # UNIQUE kept one row
    kinds = {v.kind for v in find_violations(store, _ray(A, twin))}
    assert {inv.GPU_HELD_TWICE, inv.ALLOCATION_ROWS} <= kinds


def test_the_allocations_table_must_match_the_jobs() -> None:
    rows = _rows(A, B)
    del rows[("n1", 0)]  # A lost a row
    rows[("n2", 7)] = ("9", 0)  # a job that holds nothing keeps a row
    rows[("n1", 2)] = ("2", 5)  # B's row of another attempt
    found = inv.allocation_rows([A, B], rows)
    assert _kinds(found) == [
        (inv.ALLOCATION_ROWS, ("1",), ("n1",)),
        (inv.ALLOCATION_ROWS, ("2",), ()),
        (inv.ALLOCATION_ROWS, ("9",), ("n2",)),
    ]
    assert "no allocation row for n1:0" in found[0].message
    assert "another attempt" in found[1].message and "not holding GPUs" in found[2].message


def test_a_node_holds_no_more_than_its_gpus() -> None:
    big = _job("5", {"n2": [6, 7, 8]})  # n2 has 8 GPUs: 0..7
    found = inv.node_capacity([big], _ray())
    assert _kinds(found) == [(inv.OVER_CAPACITY, ("5",), ("n2",))] and "[8]" in found[0].message


def test_ray_holding_fewer_or_more_gpus_than_corral_is_a_mismatch() -> None:
    assert _kinds(inv.ray_matches([A], _ray(A, used={"n1": 0.0}))) == [(inv.NODE_MISMATCH, ("1",), ("n1",))]
    outside = inv.ray_matches([A], _ray(A, used={"n1": 5.0}))
    assert _kinds(outside) == [(inv.NODE_MISMATCH, ("1",), ("n1",))] and "held outside" in outside[0].message
    gone = inv.ray_matches([C], _ray(C, nodes={k: v for k, v in NODES.items() if k != "n3"}, used={}))
    assert _kinds(gone)[-1] == (inv.NODE_MISMATCH, ("3",), ("n3",)) and "not alive" in gone[-1].message


def test_gpus_in_use_that_no_placement_group_holds_are_told_apart_from_corral_s() -> None:
    """Corral holds GPUs only through placement groups: an excess no group holds is not Corral's
    (a plain Ray actor, or a reservation Ray kept after removing a group), and says how many."""
    ungrouped = inv.ray_matches([A], _ray(A, used={"n1": 5.0}, grouped_gpus={"n1": 2.0}))
    assert _kinds(ungrouped) == [(inv.GPUS_OUTSIDE_PLACEMENT_GROUPS, ("1",), ("n1",))]
    assert ungrouped[0].gpus == 3.0 and "no placement group holds them" in ungrouped[0].message
    assert ungrouped[0].to_json()["gpus"] == 3.0
    # on a node where Corral holds nothing, every GPU in use is the excess
    idle = inv.ray_matches([], _ray(used={"n3": 2.0}, grouped_gpus={}))
    assert _kinds(idle) == [(inv.GPUS_OUTSIDE_PLACEMENT_GROUPS, (), ("n3",))] and idle[0].gpus == 2.0
    # another program's placement group holding the excess stays a mismatch: held outside Corral
    other = inv.ray_matches([A], _ray(A, used={"n1": 5.0}, grouped_gpus={"n1": 5.0}))
    assert _kinds(other) == [(inv.NODE_MISMATCH, ("1",), ("n1",))] and "held outside" in other[0].message
    # fewer in use than Corral allocated is never blamed on anyone else
    short = inv.ray_matches([A], _ray(A, used={"n1": 0.0}, grouped_gpus={}))
    assert _kinds(short) == [(inv.NODE_MISMATCH, ("1",), ("n1",))]


def test_jobs_in_flight_may_or_may_not_hold_their_gpus_in_ray() -> None:
    """A STARTING job's group may not exist yet; a stopping job's may be gone already."""
    stopping = _job("5", {"n2": [0, 1]}, stop=StopReason.PREEMPT)
    for ray_used in (0.0, 2.0):
        ray = _ray(C, stopping, used={"n3": ray_used / 2, "n2": ray_used}, groups=[], actors=[])
        assert inv.ray_matches([C, stopping], ray) == []


def test_persisted_queue_usage_must_equal_the_recount() -> None:
    found = find_violations(_store(A, B, usage={"q": 3}))
    assert _kinds(found) == [(inv.USAGE_MISMATCH, (), ())] and found[0].queue == "q" and found[0].settles
    assert "hold 6 GPUs, the controller charges it 3" in found[0].message


def test_quota_and_borrowing_are_checked_with_the_policy_ledger() -> None:
    alone = Queue(name="solo", quota={"H100": 2})
    lender = Queue(name="lend", cohort="c", quota={"H100": 4})
    borrower = Queue(name="borrow", cohort="c", quota={"H100": 2}, borrowing_limit=1)
    queues = [alone, lender, borrower]
    over = _job("5", {"n1": [0, 1, 2]}, queue="solo")  # 3 > 2, no cohort
    lend_use = _job("6", {"n2": [0, 1, 2]}, queue="lend")  # uses 3 of 4: lends 1
    borrow_use = _job("7", {"n2": [3, 4, 5, 6]}, queue="borrow")  # 4: borrows 2 > limit 1 > lent 1
    usage = inv.queue_usage([over, lend_use, borrow_use], NODES)
    found = inv.within_quota(usage, queues)
    assert [(v.kind, v.queue) for v in found] == [
        (inv.OVER_QUOTA, "solo"),
        (inv.OVER_BORROWING_LIMIT, "borrow"),
        (inv.COHORT_OVERCOMMITTED, "c"),
    ]
    fine = _job("7", {"n2": [3, 4, 5]}, queue="borrow")  # borrows 1: within the limit and what is lent
    assert inv.within_quota(inv.queue_usage([lend_use, fine], NODES), queues) == []


def test_a_gang_holds_all_of_its_nodes_or_none() -> None:
    half = _job("5", {"n1": [4, 5]}, nodes=2, gpus_per_node=2)
    uneven = _job("6", {"n1": [6], "n2": [6, 7]}, gpus_per_node=2)
    assert _kinds(inv.gangs_whole([A, half, uneven])) == [
        (inv.GANG_PARTIAL, ("5",), ("n1",)),
        (inv.GANG_PARTIAL, ("6",), ("n1", "n2")),
    ]
    # In Ray: a RUNNING gang whose rank 1 has no actor, or whose group is not created on its nodes.
    ray = _ray(B, actors=[RayActor("corral-2-0-r0", "2", 0, 0)])
    assert _kinds(inv.ray_matches([B], ray)) == [(inv.GANG_PARTIAL, ("2",), ("n1", "n2"))]
    moved = _ray(B, groups=[RayGroup("corral-2-0", "2", 0, "RESCHEDULING", (("n1", 2), (None, 2)))])
    found = inv.ray_matches([B], moved)
    assert _kinds(found) == [(inv.GANG_PARTIAL, ("2",), ("n1", "n2"))] and "RESCHEDULING" in found[0].message


def test_no_job_holds_gpus_outside_its_data_region() -> None:
    moved = dict(NODES, n1=NODES["n1"].model_copy(update={"region": "rb"}))
    found = inv.in_region([A, B], moved)  # B has no data region
    assert _kinds(found) == [(inv.OUTSIDE_REGION, ("1",), ("n1",))] and "n1 (rb)" in found[0].message


def test_corral_groups_and_actors_the_store_does_not_expect_are_named() -> None:
    old = RayGroup("corral-1-0", "1", 0, "CREATED", (("n2", 1.0),))
    stranger = RayGroup("corral-99-0", "99", 0, "CREATED", (("n2", 1.0),))
    actor = RayActor("corral-99-0-r0", "99", 0, 0)
    again = _job("1", {"n1": [0, 1]}, attempt=1)
    ray = _ray(again, groups=[*_ray(again).groups, old, stranger], actors=[*_ray(again).actors, actor])
    found = [v for v in inv.ray_matches([again], ray) if v.kind != inv.NODE_MISMATCH]
    assert [(v.kind, v.name, v.jobs) for v in found] == [
        (inv.UNEXPECTED_PLACEMENT_GROUP, "corral-1-0", ("1",)),
        (inv.UNEXPECTED_PLACEMENT_GROUP, "corral-99-0", ("99",)),
        (inv.UNEXPECTED_ACTOR, "corral-99-0-r0", ("99",)),
    ]
    assert "at attempt 1, not 0" in found[0].message and "holds no GPUs" in found[1].message


def test_a_running_job_without_a_placement_group_is_named() -> None:
    found = inv.ray_matches([A], _ray(A, groups=[], actors=[]))
    assert (inv.MISSING_PLACEMENT_GROUP, ("1",), ("n1",)) in _kinds(found)


def test_every_acknowledged_job_is_in_the_store() -> None:
    store = _store(A, acknowledged=("1", "2", "7"), present=frozenset({"1", "2"}))
    assert _kinds(inv.missing_jobs(store)) == [(inv.MISSING_JOB, ("7",), ())]
    store = _store(A, submitted_without_row=("12",), id_gaps=((4, 6), (9, 9)))
    found = inv.missing_jobs(store)
    assert _kinds(found) == [(inv.MISSING_JOB, ("12",), ()), (inv.MISSING_JOB, ("4", "9"), ())]
    assert "4 job id(s)" in found[1].message and "4-6, 9" in found[1].message


# --- the second reading ----------------------------------------------------------------------------


def _reader(states: list[RayState]) -> object:
    calls = iter(states)
    return lambda: next(calls)


def test_a_finding_in_flight_is_cleared_by_the_second_reading_and_a_lasting_one_reported() -> None:
    leaving = RayGroup("corral-7-0", "7", 0, "CREATED", (("n2", 1.0),))  # its job just ended
    transient = _ray(A, groups=[*_ray(A).groups, leaving], used={"n1": 2.0, "n2": 1.0})
    naps: list[float] = []
    report = check(lambda: _store(A), _reader([transient, _ray(A)]), settle_s=2.5, sleep=naps.append)  # type: ignore[arg-type]
    assert report.ok and naps == [2.5] and report.readings == 2
    assert {v.kind for v in report.cleared} == {inv.UNEXPECTED_PLACEMENT_GROUP, inv.NODE_MISMATCH}
    report = check(lambda: _store(A), _reader([transient, transient]), sleep=naps.append)  # type: ignore[arg-type]
    assert not report.ok and {v.kind for v in report.violations} == {
        inv.UNEXPECTED_PLACEMENT_GROUP,
        inv.NODE_MISMATCH,
    }


def test_store_findings_are_final_without_a_second_reading() -> None:
    twin = _job("5", {"n1": [1]})
    naps: list[float] = []
    report = check(lambda: _store(A, twin), None, sleep=naps.append)
    assert naps == [] and report.readings == 1 and not report.ray_checked
    assert [v.kind for v in report.violations] == [inv.GPU_HELD_TWICE, inv.ALLOCATION_ROWS]
    assert report.to_json()["violations"][:1] == [  # type: ignore[index]
        {
            "kind": "gpu_held_twice",
            "message": "GPU 1 of node n1 is held by jobs 1, 5",
            "jobs": ["1", "5"],
            "nodes": ["n1"],
            "queue": None,
            "name": None,
            "gpus": None,
        }
    ]


@pytest.mark.parametrize("kind", inv.KINDS)
def test_every_kind_is_exercised_above(kind: str) -> None:
    """Each kind of violation has a test that makes it fire (this file names them all)."""
    source = Path(__file__).read_text(encoding="utf-8")
    assert f"inv.{kind.upper()}" in source
