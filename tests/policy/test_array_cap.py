"""The `%N` cap of a job array, enforced by decide(): at most N tasks of the array hold GPUs at once."""

from __future__ import annotations

import pytest

from scheduler.model.job import Job, PendingCode
from scheduler.model.plan import Place, Preempt
from scheduler.policy.config import POLICY_NAMES, PolicyConfig
from scheduler.policy.decide import decide
from tests.builders import cluster, job, running, snapshot

TWO = cluster(racks=1, nodes_per_rack=2)  # 16 GPUs


def tasks(
    array_id: str, expression: str, indices: range, gpus: int = 1, priority: str = "normal"
) -> list[Job]:
    return [
        job(f"{array_id}.{i}")
        .gpus(gpus)
        .priority(priority)
        .submitted(float(i))
        .array(expression, array_id, i)
        .build()
        for i in indices
    ]


def placed(plan_decisions: tuple[object, ...]) -> list[str]:
    return [d.job_id for d in plan_decisions if isinstance(d, Place)]


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_at_most_n_tasks_start(policy: str) -> None:
    pending = tasks("10", "0-7%3", range(8))
    plan = decide(snapshot(TWO, pending), PolicyConfig(name=policy), 100.0)
    assert placed(plan.decisions) == ["10.0", "10.1", "10.2"]
    for j in pending[3:]:
        reason = plan.pending[j.id]
        assert reason.code is PendingCode.ARRAY_TASK_LIMIT
        assert reason.message == "JobArrayTaskLimit: array 10 already runs 3 of its tasks, its limit (%3)"


def test_running_and_leaving_tasks_count() -> None:
    first = tasks("10", "0-5%2", range(6))
    busy = [
        running(first[0], [(TWO[0].id, (0,))], 50.0, on=TWO),
        running(first[1], [(TWO[0].id, (1,))], 50.0, on=TWO, preempting=True),
    ]
    plan = decide(snapshot(TWO, first[2:], busy), PolicyConfig(), 100.0)
    assert placed(plan.decisions) == []
    assert {plan.pending[j.id].code for j in first[2:]} == {PendingCode.ARRAY_TASK_LIMIT}
    # One of them ends: exactly one more starts.
    plan = decide(snapshot(TWO, first[2:], busy[:1]), PolicyConfig(), 101.0)
    assert placed(plan.decisions) == ["10.2"]


def test_cap_is_per_array_and_other_jobs_pass() -> None:
    pending = [*tasks("10", "0-3%1", range(4)), *tasks("20", "0-3", range(4)), job("solo").gpus(1).build()]
    plan = decide(snapshot(TWO, pending), PolicyConfig(), 100.0)
    assert sorted(placed(plan.decisions)) == sorted(["10.0", "20.0", "20.1", "20.2", "20.3", "solo"])


def test_a_capped_task_never_preempts() -> None:
    low = job("low").gpus(8).nodes(2).priority("low").submitted(0).build()
    busy = [running(low, [(TWO[0].id, tuple(range(8))), (TWO[1].id, tuple(range(8)))], 0.0, on=TWO)]
    array = tasks("10", "0-3%1", range(2), gpus=8, priority="high")
    already = running(array[0], [(TWO[0].id, tuple(range(8)))], 0.0, on=TWO)
    plan = decide(snapshot(TWO, array[1:], [already]), PolicyConfig(), 1000.0)
    assert not [d for d in plan.decisions if isinstance(d, Preempt)]
    assert plan.pending["10.1"].code is PendingCode.ARRAY_TASK_LIMIT
    # Without the cap the same task preempts the low-priority gang.
    uncapped = tasks("10", "0-3", range(2), gpus=8, priority="high")
    plan = decide(snapshot(TWO, uncapped, busy), PolicyConfig(), 1000.0)
    assert [d.job_id for d in plan.decisions if isinstance(d, Preempt)] == ["low"]


def test_tasks_are_preempted_one_by_one() -> None:
    """Each task is its own job: a high-priority job takes only the GPUs it needs."""
    array = tasks("10", "0-1", range(2), gpus=8, priority="low")
    busy = [
        running(array[0], [(TWO[0].id, tuple(range(8)))], 0.0, on=TWO, checkpoint_interval_s=10.0),
        running(array[1], [(TWO[1].id, tuple(range(8)))], 0.0, on=TWO, checkpoint_interval_s=10.0),
    ]
    urgent = job("urgent").gpus(8).priority("high").submitted(5).build()
    plan = decide(snapshot(TWO, [urgent], busy), PolicyConfig(), 1000.0)
    victims = [d.job_id for d in plan.decisions if isinstance(d, Preempt)]
    assert len(victims) == 1 and victims[0] in {"10.0", "10.1"}


@pytest.mark.parametrize("policy", ["corral", "fifo", "sjf"])
def test_capped_tasks_do_not_use_up_the_scan_depth(policy: str) -> None:
    """A big capped array ahead in line neither hides the jobs behind it nor loses its reason."""
    array = tasks("10", "0-49%1", range(50))
    busy = [running(array[0], [(TWO[0].id, (0,))], 50.0, on=TWO)]
    later = job("later").gpus(1).submitted(100.0).build()
    config = PolicyConfig(name=policy, scan_depth=5)
    plan = decide(snapshot(TWO, [*array[1:], later], busy), config, 200.0)
    assert placed(plan.decisions) == ["later"]
    expected = "JobArrayTaskLimit: array 10 already runs 1 of its tasks, its limit (%1)"
    assert all(plan.reason_for(j.id, j.array_id).message == expected for j in array[1:])


def test_tasks_no_cycle_reached_get_their_arrays_reason() -> None:
    """The cluster is full: the cycle stops at its first job, and the capped array's tasks still say why."""
    array = tasks("10", "0-9%2", range(10))
    busy = [running(t, [(TWO[0].id, (i,))], 50.0, on=TWO) for i, t in enumerate(array[:2])]
    rest = job("rest").gpus(6).submitted(0).build()
    full = job("full").gpus(8).submitted(0).build()
    busy.append(running(rest, [(TWO[0].id, (2, 3, 4, 5, 6, 7))], 50.0, on=TWO))
    busy.append(running(full, [(TWO[1].id, tuple(range(8)))], 50.0, on=TWO))
    other = job("other").gpus(8).submitted(1).build()
    plan = decide(snapshot(TWO, [other, *array[2:]], busy), PolicyConfig(preemption=False), 200.0)
    assert plan.examined == 1 and not plan.pending  # it broke off at `other`
    assert plan.reason_for("10.9", "10").message.startswith("JobArrayTaskLimit: array 10 already runs 2")
    assert plan.reason_for("other").code is PendingCode.RESOURCES
