"""Small deterministic simulations whose results are computed by hand."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import pytest

from scheduler.control.transitions import Step, apply_plan
from scheduler.model.plan import Allocation, NodeAllocation, Plan, Preempt
from scheduler.model.queue import Queue
from scheduler.model.records import JobRecord as LiveRecord
from scheduler.model.snapshot import RunningJob
from scheduler.policy.config import POLICY_NAMES, PolicyConfig
from scheduler.sim.records import JobRecord, RunResult, TraceJob
from scheduler.sim.runner import SimOptions, Simulator
from tests.builders import cluster, cluster_config, job, queue, run_bounded

ONE = cluster(racks=1, nodes_per_rack=1)  # r-k0-n0
TWO = cluster(racks=1, nodes_per_rack=2)


def simulate(
    nodes: list,  # type: ignore[type-arg]
    jobs: list[TraceJob],
    policy: PolicyConfig | None = None,
    options: SimOptions | None = None,
    queues: list[Queue] | None = None,
    max_cycles: int = 5_000,
) -> RunResult:
    sim = Simulator(
        cluster_config(nodes, queues),
        jobs,
        policy or PolicyConfig(),
        options or SimOptions(validate=True, record_spans=True),
    )
    return run_bounded(sim, max_cycles)


def by_id(result: RunResult) -> dict[str, JobRecord]:
    return {r.job_id: r for r in result.records}


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_single_job_jct_equals_its_duration_on_an_idle_cluster(policy: str) -> None:
    result = simulate(TWO, [job("j").gpus(8).nodes(2).submitted(5).trace(1234.5)], PolicyConfig(name=policy))
    rec = by_id(result)["j"]
    assert (rec.submit_time, rec.first_start, rec.finish_time) == (5.0, 5.0, 1239.5)
    assert rec.jct == 1234.5 and rec.wait == 0.0
    assert rec.end_state == "SUCCEEDED" and rec.preemptions == 0
    assert [(s.job_id, s.start, s.end, s.end_reason) for s in result.spans] == [
        ("j", 5.0, 1239.5, "completed")
    ]


def test_jobs_queue_behind_each_other_fifo() -> None:
    jobs = [job(f"j{i}").gpus(8).submitted(i).trace(100) for i in range(3)]
    recs = by_id(simulate(ONE, jobs, PolicyConfig(name="fifo")))
    assert [(recs[f"j{i}"].first_start, recs[f"j{i}"].finish_time) for i in range(3)] == [
        (0, 100),
        (100, 200),
        (200, 300),
    ]


def test_a_cycle_interval_makes_events_wait_for_the_next_cycle() -> None:
    """With `cycle_interval_s`, a job arriving (or GPUs freed) soon after a cycle waits for the next
    one, as under a controller that decides that often; without it, every event instant decides."""
    jobs = [
        job("a").gpus(4).submitted(0).trace(100),
        job("b").gpus(4).submitted(10).trace(100),  # room for it at once
        job("c").gpus(8).submitted(20).trace(50),  # after a and b: they end at 100 and 110
    ]
    every = by_id(simulate(ONE, jobs, PolicyConfig(name="fifo")))
    assert [every[j].first_start for j in "abc"] == [0, 10, 110]
    options = SimOptions(validate=True, record_spans=True, cycle_interval_s=60)
    result = simulate(ONE, jobs, PolicyConfig(name="fifo"), options)
    coalesced = by_id(result)
    # b at the slot after the cycle at 0 (60); a ends at 100: a cycle at 120, too early for c;
    # b ends at 160: c at the next slot, 180
    assert [coalesced[j].first_start for j in "abc"] == [0, 60, 180]
    assert coalesced["c"].finish_time == 230
    cycle_times = [p.time for p in result.timeline]
    assert all(b - a >= 60 for a, b in pairwise(cycle_times)), cycle_times


def test_preempted_job_loses_work_since_its_checkpoint_plus_restart_overhead() -> None:
    # One 8-GPU node; checkpoints every 1000 s of work, 60 s to restart, 30 s grace.
    #   low:  submitted 0, 10,000 s of work.  high: submitted 2500, 1000 s of work.
    # t=2500  high arrives; low (ran 2500 s) is preempted with 30 s grace.
    # t=2530  low stops: 2530 s done, 2000 s checkpointed, 530 s lost. high starts.
    # t=3530  high ends; low restarts: 60 s overhead + 8000 s left → ends at 11,590
    #         = 10,000 + 1000 (high) + 530 (lost) + 60 (overhead).
    jobs = [
        job("low").priority("low").gpus(8).grace(30).submitted(0).trace(10_000),
        job("high").priority("high").gpus(8).submitted(2500).trace(1000),
    ]
    opts = SimOptions(checkpoint_interval_s=1000, restart_overhead_s=60, validate=True, record_spans=True)
    result = simulate(ONE, jobs, PolicyConfig(), opts)
    recs = by_id(result)
    assert (recs["high"].first_start, recs["high"].finish_time) == (2530, 3530)
    assert (recs["low"].first_start, recs["low"].finish_time) == (0, 11_590)
    assert recs["low"].preemptions == 1 and recs["low"].end_state == "SUCCEEDED"
    assert result.preemptions == 1
    spans = [(s.job_id, s.start, s.end, s.end_reason) for s in result.spans]
    assert spans == [
        ("low", 0, 2530, "preempted"),
        ("high", 2530, 3530, "completed"),
        ("low", 3530, 11_590, "completed"),
    ]


def test_node_failure_requeues_the_job_and_it_resumes_from_its_checkpoint() -> None:
    # 2 nodes; j (3000 s of work) on one of them. That node fails at t=1500: 1000 s checkpointed,
    # so j restarts at once on the other node with 60 s overhead + 2000 s → ends at 3560.
    jobs = [job("j").gpus(8).submitted(0).trace(3000)]
    opts = SimOptions(checkpoint_interval_s=1000, restart_overhead_s=60, validate=True, record_spans=True)
    sim = Simulator(cluster_config(TWO), jobs, PolicyConfig(), opts)
    # Best fit on an idle rack takes the first node.
    sim.backend.fail_node(TWO[0].id, 1500.0, 100.0)
    result = sim.run()
    rec = by_id(result)["j"]
    assert (rec.finish_time, rec.end_state, rec.preemptions) == (3560, "SUCCEEDED", 0)
    assert [(s.start, s.end, s.end_reason, s.allocation[0][0]) for s in result.spans] == [
        (0, 1500, "node_failure", TWO[0].id),
        (1500, 3560, "completed", TWO[1].id),
    ]


def test_node_failure_on_the_only_node_waits_for_its_repair() -> None:
    # Down from 1500 to 1600: j restarts at 1600 → 1600 + 60 + 2000 = 3660.
    sim = Simulator(
        cluster_config(ONE),
        [job("j").gpus(8).submitted(0).trace(3000)],
        PolicyConfig(),
        SimOptions(checkpoint_interval_s=1000, restart_overhead_s=60, validate=True),
    )
    sim.backend.fail_node(ONE[0].id, 1500.0, 100.0)
    result = sim.run()
    assert by_id(result)["j"].finish_time == 3660
    assert result.rejected == []


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_random_node_failures_requeue_jobs_and_they_all_finish(policy: str) -> None:
    nodes = cluster(racks=2, nodes_per_rack=2)
    jobs = [
        job(f"j{i}").gpus(8 if i % 2 else 4).nodes(1 + i % 2).submitted(100 * i).trace(4000) for i in range(8)
    ]
    opts = SimOptions(node_mtbf_s=3000, node_repair_s=500, seed=3, validate=True, record_spans=True)
    result = simulate(nodes, jobs, PolicyConfig(name=policy), opts)
    assert sorted(r.job_id for r in result.records) == sorted(j.job_id for j in jobs)
    assert all(r.end_state == "SUCCEEDED" for r in result.records)
    assert any(s.end_reason == "node_failure" for s in result.spans)


def test_time_limit_gives_timeout() -> None:
    result = simulate(ONE, [job("j").gpus(8).time_limit(500).submitted(0).trace(1000)])
    rec = by_id(result)["j"]
    assert (rec.end_state, rec.finish_time) == ("TIMEOUT", 500)
    assert [s.end_reason for s in result.spans] == ["timeout"]


def test_default_time_limits_apply_at_arrival_as_the_live_controller_applies_them() -> None:
    # Cluster default 500 s; queue "q" says 700 s; a job's own limit always wins. All run 1000 s
    # alone on their own node (3 nodes): each ends at its submit time + its limit.
    nodes = cluster(racks=1, nodes_per_rack=3)
    queues = [
        queue("default").quota(H100=1000).build(),
        queue("q").quota(H100=1000).build().model_copy(update={"default_time_limit_s": 700.0}),
    ]
    world = cluster_config(nodes, queues).model_copy(update={"default_time_limit_s": 500.0})
    jobs = [
        job("cluster-default").gpus(8).submitted(0).trace(1000),
        job("queue-default").queue("q").gpus(8).submitted(0).trace(1000),
        job("own").gpus(8).time_limit(900).submitted(0).trace(1000),
    ]
    result = run_bounded(Simulator(world, jobs, PolicyConfig(), SimOptions(validate=True)), 100)
    ends = {r.job_id: (r.end_state, r.finish_time) for r in result.records}
    assert ends == {
        "cluster-default": ("TIMEOUT", 500),
        "queue-default": ("TIMEOUT", 700),
        "own": ("TIMEOUT", 900),
    }


def test_a_job_that_fits_its_time_limit_succeeds() -> None:
    rec = by_id(simulate(ONE, [job("j").gpus(8).time_limit(1000).submitted(0).trace(1000)]))["j"]
    assert (rec.end_state, rec.finish_time) == ("SUCCEEDED", 1000)


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_impossible_jobs_are_rejected_and_the_rest_runs(policy: str) -> None:
    jobs = [
        job("huge").gpus(8).nodes(3).submitted(0).trace(100),
        job("b200").gpu_type("B200").gpus(1).submitted(0).trace(100),
        job("ok").gpus(8).submitted(1).trace(100),
    ]
    result = simulate(TWO, jobs, PolicyConfig(name=policy))
    assert sorted(result.rejected) == ["b200", "huge"]
    assert [(r.job_id, r.end_state) for r in result.records] == [("ok", "SUCCEEDED")]


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_job_beyond_its_queues_reach_does_not_hang_the_simulation(policy: str) -> None:
    """A 16-GPU job in a queue with 8 GPUs of quota and no cohort can never be admitted.

    It must end (rejected, or failed as never scheduled) instead of waiting forever: today the
    simulator ticks every tick_s for ever, since decide() only rejects what no node could hold.
    """
    queues = [queue("default").quota(H100=8).build()]
    jobs = [job("ok").gpus(8).submitted(0).trace(100), job("big").gpus(8).nodes(2).submitted(1).trace(100)]
    result = simulate(TWO, jobs, PolicyConfig(name=policy), queues=queues, max_cycles=500)
    assert [r.job_id for r in result.records if r.end_state == "SUCCEEDED"] == ["ok"]
    assert "big" in result.rejected


def test_record_spans_are_consistent_with_allocations() -> None:
    nodes = [
        *cluster(racks=1, nodes_per_rack=2, region="cn"),
        *cluster(racks=1, nodes_per_rack=2, region="eu"),
    ]
    jobs = [
        job("cn-gang").region("cn").gpus(8).nodes(2).submitted(0).trace(500),
        job("eu-a").region("eu").gpus(4).submitted(0).trace(300),
        job("eu-b").region("eu").gpus(4).submitted(10).trace(300),
        job("any").gpus(8).submitted(20).trace(200),
        job("low").priority("low").gpus(8).region("eu").submitted(30).trace(2000),
        job("high").priority("high").gpus(8).nodes(2).region("eu").submitted(1000).trace(100),
    ]
    opts = SimOptions(validate=True, record_spans=True, checkpoint_interval_s=100)
    result = simulate(nodes, jobs, PolicyConfig(default_min_runtime_s=0), opts)
    specs = {j.job_id: j.spec for j in jobs}
    region = {n.id: n.region for n in nodes}
    assert {r.job_id for r in result.records} == set(specs)
    for s in result.spans:
        spec = specs[s.job_id]
        assert s.start <= s.end
        assert len(s.allocation) == spec.nodes
        for node_id, reg, _rack, gpu_type, gpus in s.allocation:
            assert region[node_id] == reg
            assert spec.data_region in ("any", reg)
            assert gpu_type == "H100"
            assert len(gpus) == spec.gpus_per_node
    # No GPU is in two spans at once.
    for a in result.spans:
        for b in result.spans:
            if a is b or a.end <= b.start or b.end <= a.start:
                continue
            ga = {(n, g) for n, *_, gs in a.allocation for g in gs}
            gb = {(n, g) for n, *_, gs in b.allocation for g in gs}
            assert not ga & gb, (a, b)
    # Each job's last span ends when its record says it finished; earlier ones were cut short.
    for rec in result.records:
        mine = sorted((s for s in result.spans if s.job_id == rec.job_id), key=lambda s: s.start)
        assert mine[0].start == rec.first_start
        assert mine[-1].end == rec.finish_time and mine[-1].end_reason == "completed"
        assert all(s.end_reason == "preempted" for s in mine[:-1])
        assert len(mine) == rec.preemptions + 1
    assert any(s.end_reason == "preempted" for s in result.spans)  # high preempted low


def test_running_jobs_in_the_snapshot_turn_running_once_started() -> None:
    """The simulator marks a started job RUNNING in its job table but leaves the RunningJob it lends
    to decide() (sim.running[id].job) in STARTING for the job's whole run."""
    sim = Simulator(
        cluster_config(TWO),
        [job("a").gpus(8).submitted(0).trace(1000), job("b").gpus(8).submitted(500).trace(100)],
        PolicyConfig(),
        SimOptions(validate=True),
    )
    seen: list[tuple[str, str]] = []

    def look(_done: int, _total: int) -> None:
        if sim.clock.now() == 500.0:
            seen.append((sim.jobs["a"].state.value, sim.running["a"].job.state.value))
            seen.append((sim.jobs["a"].state.value, sim.snapshot().running["a"].job.state.value))

    sim.run(look)
    assert seen == [("RUNNING", "RUNNING"), ("RUNNING", "RUNNING")]


def test_preemptions_are_attributed_as_the_live_controller_does() -> None:
    # The run of the test above: low is preempted at 2500 by the high-priority job; it stops at
    # 2530, 530 s after its last checkpoint (2000 s of work).
    jobs = [
        job("low").priority("low").gpus(8).grace(30).submitted(0).trace(10_000),
        job("high").priority("high").gpus(8).submitted(2500).trace(1000),
    ]
    opts = SimOptions(checkpoint_interval_s=1000, restart_overhead_s=60, validate=True)
    (record,) = simulate(ONE, jobs, PolicyConfig(), opts).preemption_log
    assert (record.time, record.job_id, record.for_job, record.rule, record.lost_s) == (
        2500,
        "low",
        "high",
        "priority,service",  # a higher class, and less attained service (low: 5.6 GPU-hours)
        530,
    )
    assert record.message == (
        "preempted for a job of a higher priority class; preempted for a job with less attained GPU "
        "time (it has run long; it resumes later) (rule: priority,service); loses about 9 min of work "
        "(1.2 GPU-hours) since its last checkpoint (one every 17 min)"
    )
    assert record.private_detail.startswith("for job high: priority: high job high")
    # The live controller, given the same running job and decision, writes the same history line.
    low = jobs[0]
    running_low = job("low").priority("low").gpus(8).grace(30).submitted(0).build()
    running_low = running_low.model_copy(update={"state": "RUNNING", "started_at": 0.0})
    allocation = Allocation(nodes=(NodeAllocation(node=ONE[0].id, gpus=tuple(range(8))),))
    victim = RunningJob(running_low, allocation, ONE[0].pool, 0.0, 1000.0)
    step = Step()
    reason = record.private_detail.removeprefix("for job high: ")
    decision = Preempt(job_id=low.job_id, for_job="high", reason=reason, rule=record.rule)
    rec = replace(LiveRecord(job=running_low), allocation=allocation)
    apply_plan(
        {"low": rec}, Plan(decisions=(decision,)), {n.id: n for n in ONE}, 2500.0, step, {"low": victim}
    )
    (event,) = [e for e in step.events if e.kind == "PREEMPTING"]
    assert event.message == record.message
    assert (event.related_job, event.private_detail) == ("high", record.private_detail)
