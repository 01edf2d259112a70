"""Step 5, preempt: cheapest victims with the give-back step, guards, reclaim and service preemption."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from scheduler.model.job import MAX_TIME_S, Job, PendingCode
from scheduler.model.plan import Allocation, NodeAllocation, Plan, Preempt
from scheduler.model.queue import Queue
from scheduler.model.snapshot import RunningJob
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from scheduler.policy.preempt import protected_for_s
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
    borrowed: int = 0,
) -> RunningJob:
    """A running job; `borrowed`: GPUs above its queue's quota when it was placed."""
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
    r = running(b.build(), where, started, on=NODES, checkpoint_interval_s=1000.0, preempting=preempting)
    if not borrowed:
        return r
    alloc = r.allocation.model_copy(update={"borrowed_gpus": borrowed})
    return RunningJob(r.job, alloc, r.pool, r.started_at, r.checkpoint_interval_s)


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
    # Counts and the rule, never whom: the victims may belong to other teams.
    assert reason.detail == "preempting 1 job (of a lower priority); starts once it has exited"
    assert plan.preempts[0].rule == "priority"
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
    assert reason.detail == "waiting for 1 preempted job to exit"


def test_a_leavers_spare_node_counts_toward_a_preemption_in_the_same_cycle() -> None:
    """A 2-node gang is leaving (preempted earlier) and h1 holds one of its nodes. h2 needs 2 nodes:
    the gang's spare one and v's. Counting only the GPUs free now, it found v too little and waited
    a grace period for the gang before preempting v, two in a row (tests/sim/test_reclaim.py)."""
    jobs = [run("gang", [N0, N1], NOW - 100, preempting=True), run("v", [N2], NOW - 100), *wall(N3)]
    plan = cycle([high("h1"), high("h2", nodes=2)], jobs)
    assert plan.reason_for("h1").detail == "waiting for 1 preempted job to exit"
    assert [(p.job_id, p.for_job) for p in plan.preempts] == [("v", "h2")]


def test_waits_for_gpus_ray_is_still_releasing_and_holds_them_against_later_jobs() -> None:
    """Four of N0's free GPUs are free in Corral's books but Ray is still releasing them (the live
    controller leaves them out of capacity and names them in `settling`): the high job waits for
    them instead of preempting v, and keeps N0's other four from the small job behind it; without
    `settling` it preempts."""
    jobs = [run("v", [N1], NOW - 100), *wall(N2, N3)]
    small = job("s").queue("q").priority("low").gpus(1).submitted(NOW - 1).build()
    base = snapshot(NODES, [high(), small], jobs)
    ray_releasing = Allocation(nodes=(NodeAllocation(node=N0, gpus=(0, 1, 2, 3)),))
    withheld = replace(base, capacity=base.capacity.allocate(ray_releasing))
    assert victims(decide(withheld, CLASSIC, NOW)) == ["v"]  # blind to what is about to be free

    plan = decide(replace(withheld, settling=ray_releasing), CLASSIC, NOW)
    assert plan.preempts == [] and plan.places == []
    assert plan.reason_for("h").code is PendingCode.RESERVED
    assert plan.reason_for("h").detail == "waiting for 4 GPUs to be released by Ray"


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


# --- borrowed quota is always reclaimable ------------------------------------------------------------
def b_jobs(preemptible: bool = True, min_runtime: float = 0.0, preemptions: int = 0) -> list[RunningJob]:
    """b holds the whole cluster: b0, b1 on its own 16 GPUs, b2, b3 on the 16 it borrowed from a."""
    return [
        run(
            f"b{i}",
            [n],
            NOW - 100 * (i + 1),
            priority="normal",
            queue_name="b",
            borrowed=8 * (i >= 2),
            preemptible=preemptible,
            min_runtime=min_runtime,
            preemptions=preemptions,
        )
        for i, n in enumerate((N0, N1, N2, N3))
    ]


@pytest.mark.parametrize(
    "protection",
    [
        {"preemptible": False},
        {"min_runtime": MAX_TIME_S},  # the longest a spec may ask (a year)
        {"preemptions": 10},  # at the max_preemptions_per_job cap
        # Reclaimed so often that its backoff (4^1000) is beyond a float: found by
        # tests/sim/test_properties.py, where computing it raised OverflowError in every cycle.
        {"preemptions": 1000},
    ],
)
def test_a_borrower_is_reclaimed_whatever_protection_it_asked_for(protection: dict[str, Any]) -> None:
    # Every b job is protected; the cheapest *borrowed* one (b2, 300 s of work at risk) goes,
    # never b0 or b1 (they run on b's own quota, where protection holds).
    plan = cycle([normal("a1", "a")], b_jobs(**protection), queues=COHORT)
    assert victims(plan) == ["b2"]
    assert [(p.for_job, p.rule) for p in plan.preempts] == [("a1", "reclaim")]
    assert plan.reason_for("a1").detail == (
        "preempting 1 job (on quota its queue lent out); starts once it has exited"
    )


def test_protection_past_what_a_float_holds_is_for_ever() -> None:
    config = PolicyConfig(default_min_runtime_s=600.0, max_preemptions_per_job=100_000)
    assert protected_for_s(run("r", [N0], 0.0, preemptions=1000), config) == math.inf
    assert protected_for_s(run("r", [N0], 0.0, preemptions=3), config) == 600.0 * 4.0**3
    no_minimum = config.model_copy(update={"default_min_runtime_s": 0.0})
    assert protected_for_s(run("r", [N0], 0.0, preemptions=1000, min_runtime=60.0), no_minimum) == 60.0


def test_a_job_within_its_own_quota_keeps_its_protection() -> None:
    # a (24) lent 16 to b (8): b holds the cluster, b0 on its own quota and b1..b3 borrowed, none
    # preemptible. a's three jobs are all within a's quota; they reclaim exactly b1..b3 (b0, the
    # cheapest by work at risk, stays: it was placed within b's quota).
    queues = [queue("a").quota(H100=24).cohort("c").build(), queue("b").quota(H100=8).cohort("c").build()]
    jobs = [
        run(
            f"b{i}",
            [n],
            NOW - 10 * (i + 1),
            priority="normal",
            queue_name="b",
            preemptible=False,
            borrowed=8 * (i > 0),
        )
        for i, n in enumerate((N0, N1, N2, N3))
    ]
    plan = cycle([normal("a1", "a"), normal("a2", "a"), normal("a3", "a")], jobs, queues=queues)
    assert victims(plan) == ["b1", "b2", "b3"]
    # A fourth job of a would exceed a's quota: it reclaims nothing and b0 is left alone.
    more = cycle(
        [normal("a4", "a")],
        [
            *jobs[:1],
            *(
                run(f"a{i}", [n], NOW - 100, priority="normal", queue_name="a")
                for i, n in ((1, N1), (2, N2), (3, N3))
            ),
        ],
        queues=queues,
    )
    assert more.preempts == []
    assert more.reason_for("a4").code is PendingCode.QUOTA_EXCEEDED


def test_borrowed_jobs_keep_protection_against_priority_and_service_preemption() -> None:
    # b's own high job may preempt b's low jobs (priority), and service preemption may take any
    # long runner — but not a protected job, borrowed or not: only a reclaim overrides protection.
    b_low = [
        run("b0", [N0], NOW - 100, queue_name="b"),
        run("b1", [N1], NOW - 100, queue_name="b", preemptible=False, borrowed=8),
        *wall(N2, N3),
    ]
    plan = cycle([high("bh", queue_name="b")], b_low, queues=COHORT)
    assert victims(plan) == ["b0"]
    assert plan.preempts[0].rule == "priority"
    plan = cycle([high("bh", queue_name="b")], [b_low[1], *wall(N0, N2, N3)], queues=COHORT)
    assert plan.preempts == []


def test_reclaim_takes_from_a_queue_only_while_it_borrows() -> None:
    # a (16) and b (16) in a cohort with c (0). b holds 24 (8 borrowed), c holds 8 (all borrowed).
    # a's two 8-GPU jobs reclaim 16: one from b (then b is at its quota), one from c — not two
    # from b, although b's jobs are cheaper (less work at risk), which would leave b below its quota.
    queues = [*COHORT, queue("c").quota(H100=0).cohort("c").build()]
    jobs = [
        run("b0", [N0], NOW - 10, priority="normal", queue_name="b"),
        run("b1", [N1], NOW - 20, priority="normal", queue_name="b"),
        run("b2", [N2], NOW - 30, priority="normal", queue_name="b", borrowed=8),
        run("c0", [N3], NOW - 900, priority="normal", queue_name="c", borrowed=8),
    ]
    plan = cycle([normal("a1", "a"), normal("a2", "a")], jobs, queues=queues)
    assert sorted((p.job_id, p.for_job) for p in plan.preempts) == [("b0", "a1"), ("c0", "a2")]
    assert {p.rule for p in plan.preempts} == {"reclaim"}


def test_rule_lists_every_rule_that_applies() -> None:
    # a's high job, within a's quota, preempts b's low borrowed job: a lower class and lent quota.
    jobs = [
        run(f"b{i}", [n], NOW - 100 * (i + 1), queue_name="b", borrowed=8 * (i >= 2))
        for i, n in enumerate((N0, N1, N2, N3))
    ]
    plan = cycle([high("h", queue_name="a")], jobs, queues=COHORT)
    assert [(p.job_id, p.rule) for p in plan.preempts] == [("b0", "priority,reclaim")]
    assert plan.reason_for("h").detail == (
        "preempting 1 job (of a lower priority; on quota its queue lent out); starts once it has exited"
    )


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


@pytest.mark.parametrize("rule", ["priority", "reclaim", "service", "priority,reclaim", "reclaim,service"])
def test_preempt_rule_values(rule: str) -> None:
    assert Preempt(job_id="v", for_job="j", reason="admin detail", rule=rule).rule == rule


@pytest.mark.parametrize("rule", ["", "fairness", "priority,priority", "priority, reclaim"])
def test_preempt_rule_rejects_what_a_victim_could_not_be_told(rule: str) -> None:
    with pytest.raises(ValidationError, match="rule"):
        Preempt(job_id="v", for_job="j", reason="x", rule=rule)
