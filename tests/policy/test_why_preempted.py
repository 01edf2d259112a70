"""Why a job was preempted: the rule decide() gave, and the work lost, in the victim's words."""

from __future__ import annotations

import pytest

from scheduler.model.plan import Plan
from scheduler.model.snapshot import ClusterSnapshot, RunningJob
from scheduler.policy import explain
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from tests.builders import cluster, job, queue, running, snapshot

NODE = cluster(racks=1, nodes_per_rack=1)  # r-k0-n0: 8 GPUs
N0 = NODE[0].id
NOW = 6000.0
NO_PROTECTION = PolicyConfig(default_min_runtime_s=0.0)


def victim_of(snap: ClusterSnapshot, plan: Plan) -> tuple[RunningJob, str]:
    (preempt,) = plan.preempts
    return snap.running[preempt.job_id], preempt.rule


def priority_world(interval: float | None = None) -> tuple[ClusterSnapshot, PolicyConfig]:
    low = job("low").priority("low").gpus(8).grace(30).build()
    held = running(low, [N0], 2500.0, on=NODE, checkpoint_interval_s=interval)
    high = job("p9").priority("high").gpus(8).submitted(NOW).build()
    return snapshot(NODE, [high], [held]), PolicyConfig(service_preemption=False, default_min_runtime_s=0.0)


def reclaim_world() -> tuple[ClusterSnapshot, PolicyConfig]:
    queues = [queue("a").quota(H100=8).cohort("c").build(), queue("b").quota(H100=0).cohort("c").build()]
    borrower = job("b1").queue("b").gpus(8).grace(0).build()
    held = running(borrower, [N0], NOW - 300, on=NODE)  # 0.7 GPU-hours: service level 0
    held = RunningJob(
        held.job, held.allocation.model_copy(update={"borrowed_gpus": 8}), held.pool, held.started_at
    )
    lender = job("a9").queue("a").gpus(8).submitted(NOW).build()
    return snapshot(NODE, [lender], [held], queues=queues), NO_PROTECTION


def service_world() -> tuple[ClusterSnapshot, PolicyConfig]:
    old = job("old").gpus(8).grace(0).attained(40_000).build()  # 11 GPU-hours: the top service level
    held = running(old, [N0], NOW - 1200, on=NODE, checkpoint_interval_s=1800)
    new = job("n9").gpus(8).submitted(NOW).build()
    return snapshot(NODE, [new], [held]), NO_PROTECTION


@pytest.mark.parametrize(
    ("world", "rule", "text"),
    [
        (
            priority_world,
            "priority",
            "preempted for a job of a higher priority class (rule: priority); loses up to 59 min of "
            "work (7.8 GPU-hours): its run since this attempt started and its grace period, as it "
            "reported no checkpoint (a job that saves one on SIGTERM loses none)",
        ),
        (
            reclaim_world,
            "reclaim",
            "its queue ran on borrowed quota, which the lending queue took back (rule: reclaim); "
            "loses up to 5 min of work (0.7 GPU-hours): its run since this attempt started and its "
            "grace period, as it reported no checkpoint (a job that saves one on SIGTERM loses none)",
        ),
        (
            service_world,
            "service",
            "preempted for a job with less attained GPU time (it has run long; it resumes later) "
            "(rule: service); loses about 20 min of work (2.7 GPU-hours) since its last checkpoint "
            "(one every 30 min)",
        ),
    ],
)
def test_each_rule_in_the_victims_words(world, rule: str, text: str) -> None:  # type: ignore[no-untyped-def]
    snap, config = world()
    plan = decide(snap, config, NOW)
    victim, given = victim_of(snap, plan)
    assert given == rule
    assert explain.why_preempted(given, victim, NOW) == text
    (preempt,) = plan.preempts
    assert f"job {preempt.for_job}" not in text and "queue a" not in text  # never whom, nor its queue


def test_work_lost_since_the_last_checkpoint_counts_to_the_end_of_the_grace_period() -> None:
    # low started at 2500 with checkpoints every 1000 s; preempted at 6000 with 30 s grace: it
    # stops at 6030, 530 s after its checkpoint at 5500 (as SimBackend throws away).
    snap, config = priority_world(interval=1000.0)
    victim, rule = victim_of(snap, decide(snap, config, NOW))
    lost = explain.work_lost(victim, NOW)
    assert (lost.seconds, lost.gpu_seconds, lost.basis) == (530.0, 4240.0, "checkpoint")
    assert explain.why_preempted(rule, victim, NOW).endswith(
        "loses about 9 min of work (1.2 GPU-hours) since its last checkpoint (one every 17 min)"
    )


def test_several_rules_are_named_together() -> None:
    assert explain.preempted_words("priority,reclaim") == (
        "preempted for a job of a higher priority class; "
        "its queue ran on borrowed quota, which the lending queue took back"
    )


def test_the_private_detail_names_the_preemptor() -> None:
    assert explain.preempted_by("12", "priority: high job 12 needs its GPUs") == (
        "for job 12: priority: high job 12 needs its GPUs"
    )
