"""A lending queue gets its quota back and keeps it: the borrowed flag, the order of queues below
their quota, claims on lent-out quota, and GPUs held for a job waiting on preempted jobs."""

from __future__ import annotations

from scheduler.model.job import Job, PendingCode
from scheduler.model.plan import Plan
from scheduler.model.queue import Queue
from scheduler.model.snapshot import RunningJob
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from scheduler.policy.quota import QuotaLedger
from tests.builders import NodeGpus, cluster, job, queue, running, snapshot

NODES = cluster(racks=1, nodes_per_rack=4)  # 4 × 8 H100
N0, N1, N2, N3 = (n.id for n in NODES)
NOW = 10_000.0
CFG = PolicyConfig(service_preemption=False)
A_B = [queue("a").quota(H100=16).cohort("c").build(), queue("b").quota(H100=16).cohort("c").build()]


def pending(job_id: str, queue_name: str, gpus: int = 8, submitted: float = NOW - 1) -> Job:
    return job(job_id).queue(queue_name).gpus(gpus).submitted(submitted).build()


def run(
    job_id: str, queue_name: str, where: list[NodeGpus], *, borrowed: int = 0, preempting: bool = False
) -> RunningJob:
    gpus = len(where[0][1]) if isinstance(where[0], tuple) else 8
    j = job(job_id).queue(queue_name).gpus(gpus).submitted(0).build()
    r = running(j, where, NOW - 5000, on=NODES, checkpoint_interval_s=1000.0, preempting=preempting)
    if not borrowed:
        return r
    alloc = r.allocation.model_copy(update={"borrowed_gpus": borrowed})
    return RunningJob(r.job, alloc, r.pool, r.started_at, r.checkpoint_interval_s)


def cycle(jobs: list[Job], held: list[RunningJob], queues: list[Queue] = A_B) -> Plan:
    return decide(snapshot(NODES, jobs, held, queues=queues), CFG, NOW)


def test_a_placement_on_borrowed_quota_carries_the_borrowed_gpus() -> None:
    # a holds its 16; its third job borrows 8 of b's idle quota, its second does not borrow.
    plan = cycle([pending("a1", "a", submitted=1), pending("a2", "a", submitted=2)], [run("a0", "a", [N0])])
    placed = {p.job_id: p for p in plan.places}
    assert (placed["a1"].borrowed_gpus, placed["a1"].allocation.borrowed_gpus) == (0, 0)
    assert (placed["a2"].borrowed_gpus, placed["a2"].allocation.borrowed_gpus) == (8, 8)
    # The running job built from that allocation (as the simulator and the controller do) exposes it.
    r = RunningJob(pending("a2", "a"), placed["a2"].allocation, NODES[0].pool, NOW)
    assert r.borrowed_gpus == 8


def test_a_queue_below_its_quota_goes_before_borrowers_whatever_their_age() -> None:
    # N3 is free. b holds its 16 and its job has waited five days (aging puts it far ahead); a holds
    # 8 of its 16 and its job just arrived. A queue below its quota goes first (else b would take
    # what a reclaims).
    held = [run("a0", "a", [N0]), run("b0", "b", [N1]), run("b1", "b", [N2])]
    old_b = pending("b-old", "b", submitted=NOW - 5 * 86400)
    plan = cycle([old_b, pending("a-new", "a")], held)
    assert [p.job_id for p in plan.places] == ["a-new"]
    # Behind its own queue's big head (24 GPUs, over a's quota), a's small job still goes first.
    big = job("a-big").queue("a").gpus(8).nodes(3).submitted(0).build()
    plan = cycle([old_b, big, pending("a-new", "a")], held)
    assert [p.job_id for p in plan.places] == ["a-new"]


def test_a_job_within_its_quota_goes_before_one_that_would_borrow_even_of_a_queue_below_quota() -> None:
    # Both queues hold nothing (below their 16). b's older 24-GPU job would borrow 8; a's new 16-GPU
    # job fits its own quota. Taken first, b's job would borrow the 8 that a's job needs: a lender
    # reclaiming its quota would see it lent out again at once (found by the live e2e reclaim test).
    old_b = job("b-big").queue("b").gpus(8).nodes(3).submitted(NOW - 5 * 86400).build()
    a_fits = job("a-fits").queue("a").gpus(8).nodes(2).submitted(NOW - 1).build()
    plan = cycle([old_b, a_fits], [])
    assert [p.job_id for p in plan.places] == ["a-fits"]


def test_a_claim_keeps_lent_quota_from_being_lent_again() -> None:
    # a (16), b (16) and c (8) in one cohort; b holds 36: 20 borrowed of the 24 that a and c leave
    # idle. a's 8-GPU job is refused (a would lend 8, less than the 20 borrowed) and claims its 8.
    queues = {q.name: q for q in [*A_B, queue("c").quota(H100=8).cohort("c").build()]}
    ledger = QuotaLedger(queues, {"b": {"H100": 36}})
    assert not ledger.admit("a", "H100", 8).ok
    assert ledger.admit("b", "H100", 4).ok  # without a claim b could borrow the last 4 idle
    ledger.claim("a", "H100", 8)
    denied = ledger.admit("b", "H100", 4)
    assert not denied.ok
    assert denied.detail == "queue b uses 36/16 H100; needs 4 more, its cohort lends 0"
    assert ledger.admit("c", "H100", 4).ok  # claims never limit a queue's use of its own quota
    # a's later jobs count the claim: 8 claimed + 8 more is still within 16, 8 + 16 is not.
    assert ledger.within_nominal("a", "H100", 8)
    assert not ledger.within_nominal("a", "H100", 16)


def test_a_borrower_does_not_take_back_the_quota_a_lender_waits_for() -> None:
    # a (16), b (8), c (8): b holds 28 (20 borrowed of the 24 that a and c leave idle); N3 has 4
    # GPUs free. a's job (first: a is below its quota) is refused — with it a would lend 8 < 20 —
    # and reclaims a whole node from b. b's 4-GPU job, which the cohort's last 4 GPUs of idle quota
    # would admit, must wait: that quota is a's.
    queues = [
        queue("a").quota(H100=16).cohort("c").build(),
        queue("b").quota(H100=8).cohort("c").build(),
        queue("c").quota(H100=8).cohort("c").build(),
    ]
    held = [
        run("b0", "b", [N0]),
        run("b1", "b", [N1], borrowed=8),
        run("b2", "b", [N2], borrowed=8),
        run("b3", "b", [(N3, (0, 1, 2, 3))], borrowed=4),
    ]
    plan = cycle([pending("a1", "a"), pending("b-more", "b", gpus=4)], held, queues=queues)
    assert [(p.for_job, p.rule) for p in plan.preempts] == [("a1", "reclaim")]
    assert plan.places == []
    assert plan.reason_for("b-more").detail == "queue b uses 28/8 H100; needs 4 more, its cohort lends 0"


def test_a_job_waiting_for_preempted_jobs_holds_the_free_gpus_it_will_use() -> None:
    # N0: 4 GPUs free, 4 held by one of b's jobs in its grace period. a1 (8 GPUs) fits on N0 once
    # that job leaves and waits for it; a2 (4 GPUs, after a1 in a's order) may not take N0's free
    # half meanwhile, or a1 would find N0 short and have to preempt again.
    held = [
        run("leaving", "b", [(N0, (0, 1, 2, 3))], preempting=True, borrowed=4),
        run("a0", "a", [N1]),
        run("b0", "b", [N2]),
        run("b1", "b", [N3], borrowed=8),
    ]
    # (Both just arrived: no backfill reservation yet.)
    plan = cycle([pending("a1", "a", submitted=NOW - 2), pending("a2", "a", gpus=4)], held)
    assert plan.reason_for("a1").detail == "waiting for 1 preempted job to exit"
    assert plan.places == [] and plan.preempts == []
    assert plan.reason_for("a2").code is PendingCode.RESOURCES
