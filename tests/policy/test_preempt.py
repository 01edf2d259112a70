"""Step 5, preempt: cheapest victims with the give-back step, guards, reclaim and service preemption."""

from __future__ import annotations

import pytest

from scheduler.model.job import Job, PendingCode
from scheduler.model.plan import Plan
from scheduler.model.queue import Queue
from scheduler.model.snapshot import RunningJob
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from tests.builders import NodeGpus, cluster, job, queue, running, snapshot

NODES = cluster(racks=1, nodes_per_rack=4)  # 32 GPUs
N0, N1, N2, N3 = (n.id for n in NODES)
# Classic priority preemption only: no service preemption, no minimum runtime.
CLASSIC = PolicyConfig(service_preemption=False, default_min_runtime_s=0.0)
NOW = 6000.0


def run(
    job_id: str,
    where: list[NodeGpus],
    started: float,
    *,
    priority: str = "low",
    gpus: int = 8,
    preemptible: bool = True,
    queue_name: str = "q",
    preemptions: int = 0,
    min_runtime: float = 0.0,
    preempting: bool = False,
) -> RunningJob:
    b = (
        job(job_id)
        .queue(queue_name)
        .priority(priority)
        .gpus(gpus)
        .nodes(len(where))
        .preemptible(preemptible)
        .min_runtime(min_runtime)
        .submitted(-1000)
    )
    if preemptions:
        b = b.preemptions(preemptions)
    return running(b.build(), where, started, on=NODES, checkpoint_interval_s=1000.0, preempting=preempting)


def wall(*nodes: str) -> list[RunningJob]:
    """Non-preemptible jobs filling whole nodes."""
    return [run(f"wall-{n}", [n], 0.0, priority="normal", preemptible=False) for n in nodes]


def high(job_id: str = "h", gpus: int = 8, nodes: int = 1, queue_name: str = "q") -> Job:
    return job(job_id).queue(queue_name).priority("high").gpus(gpus).nodes(nodes).submitted(NOW - 1).build()


def cycle(
    pending: list[Job],
    jobs: list[RunningJob],
    config: PolicyConfig = CLASSIC,
    now: float = NOW,
    queues: list[Queue] | None = None,
) -> Plan:
    return decide(snapshot(NODES, pending, jobs, queues=queues), config, now)


def victims(plan: Plan) -> list[str]:
    return sorted(p.job_id for p in plan.preempts)


def test_preempts_the_cheapest_victims_and_gives_back_the_unneeded() -> None:
    # Candidates, cheapest first (all low; GPU-seconds lost since the 1000 s checkpoint):
    #   c1: 4 GPUs on n0 (n0's other 4 are not preemptible), 100 s × 4 = 400
    #   c2: 8 GPUs on n1, 100 s × 8 = 800
    #   c3: 8 GPUs on n2, 500 s × 8 = 4000
    # Taking c1 then c2 fits h (on n1); giving back in reverse keeps c2 and returns c1.
    jobs = [
        run("c1", [(N0, (0, 1, 2, 3))], NOW - 100, gpus=4),
        run("x", [(N0, (4, 5, 6, 7))], 0.0, priority="normal", gpus=4, preemptible=False),
        run("c2", [N1], NOW - 100),
        run("c3", [N2], NOW - 500),
        *wall(N3),
    ]
    plan = cycle([high()], jobs)
    assert victims(plan) == ["c2"]
    assert plan.preempts[0].for_job == "h"
    assert plan.preempts[0].reason.startswith("priority: high job h")
    reason = plan.reason_for("h")
    assert reason.code is PendingCode.RESERVED
    assert "preempting 1 jobs" in reason.detail
    assert plan.places == []


def test_least_work_lost_first() -> None:
    jobs = [run("lost500", [N0], NOW - 500), run("lost100", [N1], NOW - 1100), *wall(N2, N3)]
    assert victims(cycle([high()], jobs)) == ["lost100"]  # 1100 s since start, 100 s since checkpoint


def test_lowest_class_first_whatever_the_work_lost() -> None:
    jobs = [run("low", [N0], NOW - 900), run("normal", [N1], NOW - 10, priority="normal"), *wall(N2, N3)]
    assert victims(cycle([high()], jobs)) == ["low"]


def test_gang_preempts_enough_victims_for_all_its_nodes() -> None:
    jobs = [run("v0", [N0], NOW - 100), run("v1", [N1], NOW - 200), run("v2", [N2], NOW - 300), *wall(N3)]
    assert victims(cycle([high(nodes=2)], jobs)) == ["v0", "v1"]


def test_never_preempts_when_the_job_would_still_not_fit() -> None:
    # Only n1 holds preemptible work: a 2-node gang cannot fit even with it gone.
    jobs = [run("v", [N1], NOW - 100), *wall(N0, N2, N3)]
    plan = cycle([high(nodes=2)], jobs)
    assert plan.preempts == []
    assert plan.reason_for("h").code is PendingCode.RESOURCES
    # Preemptible halves next to non-preemptible halves never free a whole node.
    halves = [
        run(f"v{i}", [(n, (0, 1, 2, 3))], NOW - 100, gpus=4) for i, n in enumerate((N0, N1, N2, N3))
    ] + [
        run(f"x{i}", [(n, (4, 5, 6, 7))], 0.0, gpus=4, priority="normal", preemptible=False)
        for i, n in enumerate((N0, N1, N2, N3))
    ]
    assert cycle([high()], halves).preempts == []


def test_never_preempts_non_preemptible_or_equal_class_jobs() -> None:
    jobs = [
        run("np", [N0], NOW - 100, preemptible=False),
        run("peer", [N1], NOW - 100, priority="high"),
        *wall(N2, N3),
    ]
    assert cycle([high()], jobs).preempts == []


def test_low_class_preempts_nobody() -> None:
    low = job("l").queue("q").priority("low").gpus(8).submitted(NOW - 1).build()
    jobs = [run("v", [N0], NOW - 100), *wall(N1, N2, N3)]
    assert cycle([low], jobs).preempts == []
    normal = job("n").queue("q").priority("normal").gpus(8).submitted(NOW - 1).build()
    assert victims(cycle([normal], jobs)) == ["v"]


@pytest.mark.parametrize(
    ("ran", "spec_min", "default_min", "preempted"),
    [
        (200.0, 0.0, 300.0, False),  # the config's default minimum runtime protects it
        (300.0, 0.0, 300.0, True),
        (500.0, 1000.0, 0.0, False),  # its own min_runtime protects it
        (1000.0, 1000.0, 0.0, True),
        (500.0, 400.0, 600.0, False),  # the larger of the two counts
    ],
)
def test_min_runtime(ran: float, spec_min: float, default_min: float, preempted: bool) -> None:
    jobs = [run("v", [N0], NOW - ran, min_runtime=spec_min), *wall(N1, N2, N3)]
    cfg = PolicyConfig(service_preemption=False, default_min_runtime_s=default_min)
    assert victims(cycle([high()], jobs, cfg)) == (["v"] if preempted else [])


@pytest.mark.parametrize(("count", "preempted"), [(2, True), (3, False), (7, False)])
def test_max_preemptions_per_job(count: int, preempted: bool) -> None:
    jobs = [run("v", [N0], NOW - 100, preemptions=count), *wall(N1, N2, N3)]
    cfg = PolicyConfig(service_preemption=False, default_min_runtime_s=0.0, max_preemptions_per_job=3)
    assert victims(cycle([high()], jobs, cfg)) == (["v"] if preempted else [])


def test_waits_for_jobs_already_leaving_instead_of_preempting_more() -> None:
    jobs = [run("leaving", [N0], NOW - 100, preempting=True), run("v", [N1], NOW - 100), *wall(N2, N3)]
    plan = cycle([high()], jobs)
    assert plan.preempts == []
    reason = plan.reason_for("h")
    assert reason.code is PendingCode.RESERVED
    assert "waiting for 1 preempted jobs" in reason.detail


def test_preemption_can_be_switched_off() -> None:
    jobs = [run("v", [N0], NOW - 100), *wall(N1, N2, N3)]
    off = PolicyConfig(preemption=False, default_min_runtime_s=0.0)
    assert cycle([high()], jobs, off).preempts == []
    no_preemptors = PolicyConfig(
        max_preemptors_per_cycle=0, default_min_runtime_s=0.0, service_preemption=False
    )
    assert cycle([high()], jobs, no_preemptors).preempts == []


# --- reclaim of lent quota -------------------------------------------------------------------------
COHORT = [queue("a").quota(H100=16).cohort("c").build(), queue("b").quota(H100=16).cohort("c").build()]


def normal(job_id: str, queue_name: str) -> Job:
    return job(job_id).queue(queue_name).priority("normal").gpus(8).submitted(NOW - 1).build()


def test_queue_under_its_quota_reclaims_lent_quota() -> None:
    # b borrowed a's idle 16 GPUs and holds the whole cluster; a's same-class job takes them back.
    jobs = [
        run(f"b{i}", [n], NOW - 100 * (i + 1), priority="normal", queue_name="b")
        for i, n in enumerate((N0, N1, N2, N3))
    ]
    plan = cycle([normal("a1", "a")], jobs, queues=COHORT)
    assert victims(plan) == ["b0"]  # least work lost
    assert plan.preempts[0].reason.startswith("reclaim: queue a takes back its lent H100 quota")


def test_no_reclaim_when_the_queue_is_at_its_quota() -> None:
    jobs = [
        *(run(f"a{i}", [n], NOW - 100, priority="normal", queue_name="a") for i, n in enumerate((N0, N1))),
        *(run(f"b{i}", [n], NOW - 100, priority="normal", queue_name="b") for i, n in enumerate((N2, N3))),
    ]
    plan = cycle([normal("a9", "a")], jobs, queues=COHORT)
    assert plan.preempts == []
    assert plan.reason_for("a9").code is PendingCode.QUOTA_EXCEEDED


def test_no_reclaim_from_a_queue_that_does_not_borrow() -> None:
    # a uses 8 of 16, b uses its own 16, a lone queue z fills the rest: nobody borrows.
    queues = [*COHORT, queue("z").quota(H100=8).build()]
    jobs = [
        run("a0", [N0], NOW - 100, priority="normal", queue_name="a"),
        *(run(f"b{i}", [n], NOW - 100, priority="normal", queue_name="b") for i, n in enumerate((N1, N2))),
        run("z0", [N3], NOW - 100, priority="normal", queue_name="z"),
    ]
    assert cycle([normal("a1", "a")], jobs, queues=queues).preempts == []


def test_no_priority_preemption_across_queues_to_borrow() -> None:
    # a is at its 16-GPU quota (with high jobs of its own); its high job may not preempt b's low
    # jobs to borrow.
    jobs = [
        *(run(f"a{i}", [n], NOW - 100, priority="high", queue_name="a") for i, n in enumerate((N0, N1))),
        *(run(f"b{i}", [n], NOW - 100, queue_name="b") for i, n in enumerate((N2, N3))),
    ]
    plan = cycle([high(queue_name="a")], jobs, queues=COHORT)
    assert plan.preempts == []


# --- service preemption --------------------------------------------------------------------------------
ONE = cluster(racks=1, nodes_per_rack=1)


def service_cycle(now: float, config: PolicyConfig) -> Plan:
    long_job = job("long").queue("q").gpus(8).submitted(-1).build()
    short = job("short").queue("q").gpus(8).submitted(now - 1).build()
    snap = snapshot(ONE, [short], [running(long_job, [ONE[0].id], 0.0, on=ONE, checkpoint_interval_s=1000.0)])
    return decide(snap, config, now)


def test_service_preemption_of_a_long_running_job_by_a_short_waiting_one() -> None:
    # After 5000 s on 8 GPUs the long job attained 40,000 GPU-s (level 2); the new one has 0 (level 0).
    plan = service_cycle(5000.0, PolicyConfig())
    assert victims(plan) == ["long"]
    assert plan.preempts[0].reason.startswith("service: short has attained less GPU time")
    assert service_cycle(5000.0, PolicyConfig(service_preemption=False)).preempts == []


def test_no_service_preemption_within_the_same_level() -> None:
    # 400 s × 8 GPUs = 3200 GPU-s: still level 0, like the waiting job.
    assert service_cycle(400.0, PolicyConfig()).preempts == []
