"""The `las` baseline is Tiresias-L (dlas-gpu): what it ranks on and whom it preempts."""

from __future__ import annotations

from scheduler.model.job import Job
from scheduler.model.plan import Place, Preempt
from scheduler.model.snapshot import RunningJob
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from scheduler.policy.order import las_level
from tests.builders import cluster, job, running, snapshot

LAS = PolicyConfig(name="las")
ONE = cluster(racks=1, nodes_per_rack=1)  # one node of 8 GPUs
NOW = 10_000.0


def _running(
    job_id: str, gpus: int, submitted: float, started: float, attained: float = 0.0, first_gpu: int = 0
) -> RunningJob:
    j = job(job_id).gpus(gpus).submitted(submitted).attained(attained).build()
    held = tuple(range(first_gpu, first_gpu + gpus))
    return running(j, [(ONE[0].id, held)], started, on=ONE, checkpoint_interval_s=1.0)


def _decisions(pending: list[Job], run: list[RunningJob]) -> tuple[list[str], list[str]]:
    plan = decide(snapshot(ONE, pending, run, config=LAS), LAS, NOW)
    placed = [d.job_id for d in plan.decisions if isinstance(d, Place)]
    preempted = [d.job_id for d in plan.decisions if isinstance(d, Preempt)]
    return placed, preempted


def test_thresholds_are_tiresias_gpu_seconds() -> None:
    th = LAS.las_baseline_thresholds_gpu_s
    assert th == (3250.0, 7200.0)
    assert [las_level(s, th) for s in (0, 3249, 3250, 7199, 7200, 1e9)] == [0, 0, 1, 1, 2, 2]


def test_running_job_keeps_its_gpus_against_an_older_pending_job_of_its_level() -> None:
    # r (8 GPUs) has run 100 s: 800 GPU-s, level 0; p arrived before r, also level 0. Tiresias
    # keeps running jobs ahead of pending ones within a queue: nobody is preempted.
    r = _running("r", 8, submitted=500.0, started=NOW - 100)
    p = job("p").gpus(8).submitted(0.0).build()
    assert _decisions([p], [r]) == ([], [])


def test_attained_service_is_gpu_time() -> None:
    # The same 500 s: on 8 GPUs that is 4,000 GPU-s (level 1), so a new level-0 job takes its GPUs;
    # on 4 GPUs it is 2,000 GPU-s (level 0), and the waiting job of the same level waits.
    wide = _running("wide", 8, submitted=500.0, started=NOW - 500)
    p = job("p").gpus(8).submitted(9000.0).build()
    assert _decisions([p], [wide]) == ([], ["wide"])
    narrow = _running("narrow", 4, submitted=500.0, started=NOW - 500)
    other = _running("other", 4, submitted=400.0, started=NOW - 500, first_gpu=4)
    assert _decisions([p], [narrow, other]) == ([], [])


def test_earlier_attempts_count() -> None:
    # 3,000 GPU-s from an earlier attempt plus 8 × 100 s now: 3,800, level 1.
    r = _running("r", 8, submitted=500.0, started=NOW - 100, attained=3000.0)
    p = job("p").gpus(8).submitted(9000.0).build()
    assert _decisions([p], [r]) == ([], ["r"])


def test_lower_level_first_then_arrival_and_a_job_that_does_not_fit_is_skipped() -> None:
    # 4 GPUs free: old (level 1, 4 GPUs) ranks behind big (level 0, 8 GPUs, does not fit) and
    # small (level 0, 4 GPUs); small runs, old waits, big waits for GPUs nobody may free for it
    # (r has run under the 60 s a start is protected).
    r = _running("r", 4, submitted=0.0, started=NOW - 30)
    old = job("old").gpus(4).submitted(0.0).attained(5000.0).build()
    big = job("big").gpus(8).submitted(100.0).build()
    small = job("small").gpus(4).submitted(200.0).build()
    assert _decisions([old, big, small], [r]) == (["small"], [])


def _leaving(job_id: str, gpus: int, first_gpu: int) -> RunningJob:
    # Preempted earlier, in its grace period: its GPUs free up when it exits.
    j = job(job_id).gpus(gpus).submitted(0.0).attained(50_000.0).build()
    held = tuple(range(first_gpu, first_gpu + gpus))
    return running(j, [(ONE[0].id, held)], NOW - 5000, on=ONE, checkpoint_interval_s=1.0, preempting=True)


def test_a_preemptor_keeps_the_gpus_its_victims_free_while_they_exit() -> None:
    # p (level 0, the whole node) preempted everyone; `leaver` is still in its grace period, the
    # rest are gone and wait again. The 6 free GPUs are p's: old (level 2, 4 GPUs) must not take
    # them, or p preempts it again once `leaver` exits, and again after every grace period — the
    # replay that never ended (tests/sim/test_las_livelock.py).
    leaver = _leaving("leaver", 2, first_gpu=0)
    p = job("p").gpus(8).submitted(9000.0).build()
    old = job("old").gpus(4).submitted(0.0).attained(50_000.0).build()
    plan = decide(snapshot(ONE, [p, old], [leaver], config=LAS), LAS, NOW)
    assert [d.job_id for d in plan.decisions] == []
    assert plan.reason_for("p").detail == "waiting for 1 preempted job to exit"


def test_the_gpus_of_jobs_already_leaving_count_as_freed_for_a_preemptor() -> None:
    # p needs the whole node: `leaver` (2 GPUs) is already going, so only r (6 GPUs, level 2)
    # must be preempted, now, not one grace period later; and no one more.
    leaver = _leaving("leaver", 2, first_gpu=0)
    r = _running("r", 6, submitted=100.0, started=NOW - 5000, first_gpu=2)
    p = job("p").gpus(8).submitted(9000.0).build()
    assert _decisions([p], [leaver, r]) == ([], ["r"])
