"""Step 1, order: priority class, aging, fair share, LAS levels and the baselines' keys."""

from __future__ import annotations

import pytest

from scheduler.model.job import Job
from scheduler.model.snapshot import ClusterSnapshot
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from scheduler.policy.order import FairShare, QueueMerger, las_level, pending_key
from tests.builders import cluster, job, queue, running, snapshot

VALUES = {"low": 0, "normal": 100, "high": 1000}
NODES = cluster(racks=1, nodes_per_rack=4)  # 32 H100


def merged(snap: ClusterSnapshot, config: PolicyConfig, now: float) -> list[str]:
    key = pending_key(config, VALUES)
    fair = FairShare(snap, config) if config.name == "corral" else None
    return [j.id for j in QueueMerger(snap, config, now, key, fair)]


def sort_ids(config: PolicyConfig, jobs: list[Job]) -> list[str]:
    return [j.id for j in sorted(jobs, key=pending_key(config, VALUES))]


# --- las_level ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("attained", "level"),
    [(0.0, 0), (3599.9, 0), (3600.0, 1), (35999.0, 1), (36000.0, 2), (1e12, 2)],
)
def test_las_level(attained: float, level: int) -> None:
    assert las_level(attained, (3600.0, 36000.0)) == level


def test_las_level_without_thresholds_is_zero() -> None:
    assert las_level(1e9, ()) == 0


# --- priority class and aging --------------------------------------------------------------------
def test_priority_class_first_within_a_queue() -> None:
    early_normal = job("normal").priority("normal").submitted(0).build()
    late_high = job("high").priority("high").submitted(100).build()
    early_low = job("low").priority("low").submitted(0).build()
    assert sort_ids(PolicyConfig(), [early_low, early_normal, late_high]) == ["high", "normal", "low"]


def test_priority_class_first_across_queues() -> None:
    low = job("low").queue("a").priority("low").submitted(0).build()
    high = job("high").queue("b").priority("high").submitted(100).build()
    snap = snapshot(NODES, [low, high])
    assert merged(snap, PolicyConfig(), 200.0) == ["high", "low"]


# Aging: score = value + waited / 36 s. A low (0) job overtakes a high (1000) one submitted after it
# once it was submitted more than 1000 × 36 = 36,000 s earlier, whatever `now` is.
@pytest.mark.parametrize(("gap", "first"), [(35_999.0, "high"), (36_001.0, "low")])
def test_aging_lets_an_old_low_job_overtake_a_new_high_one(gap: float, first: str) -> None:
    low = job("low").queue("a").priority("low").submitted(0).build()
    high = job("high").queue("b").priority("high").submitted(gap).build()
    # Across queues (merged by score) ...
    snap = snapshot(NODES, [low, high])
    order = merged(snap, PolicyConfig(), gap + 10.0)
    assert order[0] == first
    # ... within one queue (the static key) ...
    same_queue = [
        job("low").priority("low").submitted(0).build(),
        job("high").priority("high").submitted(gap).build(),
    ]
    assert sort_ids(PolicyConfig(), same_queue)[0] == first
    # ... and in a cycle with room for one of them.
    one_node = cluster(racks=1, nodes_per_rack=1)
    big_low = job("low").queue("a").priority("low").gpus(8).submitted(0).build()
    big_high = job("high").queue("b").priority("high").gpus(8).submitted(gap).build()
    plan = decide(snapshot(one_node, [big_low, big_high]), PolicyConfig(), gap + 10.0)
    assert [p.job_id for p in plan.places] == [first]


def test_aging_rate_is_configurable() -> None:
    # With 1 s per point, a 1000-point class difference is overcome after 1000 s.
    cfg = PolicyConfig(aging_s_per_point=1.0)
    low = job("low").queue("a").priority("low").submitted(0).build()
    high = job("high").queue("b").priority("high").submitted(1001).build()
    assert merged(snapshot(NODES, [low, high], config=cfg), cfg, 2000.0) == ["low", "high"]


# --- fair share ----------------------------------------------------------------------------------
def hog(queue_name: str, gpus_nodes: list[str]) -> list:  # type: ignore[type-arg]
    return [
        running(job(f"{queue_name}-run{i}").queue(queue_name).gpus(8).build(), [n], 0.0, on=NODES)
        for i, n in enumerate(gpus_nodes)
    ]


def test_fair_share_puts_a_queue_holding_more_gpus_behind() -> None:
    # Queue a holds 16 of 32 GPUs: share 0.5, score −500. Both waiting jobs are otherwise equal;
    # a's was even submitted first.
    a_job = job("a1").queue("a").gpus(8).submitted(0).build()
    b_job = job("b1").queue("b").gpus(8).submitted(10).build()
    snap = snapshot(NODES, [a_job, b_job], hog("a", ["r-k0-n0", "r-k0-n1"]))
    assert FairShare(snap, PolicyConfig()).share("a") == pytest.approx(0.5)
    assert FairShare(snap, PolicyConfig()).share("b") == 0.0
    assert merged(snap, PolicyConfig(), 100.0) == ["b1", "a1"]
    # In a cycle with room for one job, b's job starts.
    snap_one = snapshot(NODES, [a_job, b_job], hog("a", ["r-k0-n0", "r-k0-n1"]) + hog("c", ["r-k0-n2"]))
    plan = decide(snap_one, PolicyConfig(preemption=False), 100.0)
    assert [p.job_id for p in plan.places] == ["b1"]
    # Aging beats the share once a's job waited 500 × 36 = 18,000 s longer.
    older = job("a1").queue("a").gpus(8).submitted(0).build()
    newer = job("b1").queue("b").gpus(8).submitted(18_001).build()
    snap = snapshot(NODES, [older, newer], hog("a", ["r-k0-n0", "r-k0-n1"]))
    assert merged(snap, PolicyConfig(), 20_000.0) == ["a1", "b1"]


def test_fair_share_weight_and_history() -> None:
    cfg = PolicyConfig()
    heavy = queue("heavy").quota(H100=32).weight(2.0).build()
    light = queue("light").quota(H100=32).build()
    snap = snapshot(NODES, [], hog("heavy", ["r-k0-n0", "r-k0-n1"]), queues=[heavy, light])
    assert FairShare(snap, cfg).share("heavy") == pytest.approx(0.25)  # 0.5 / weight 2
    # Decayed history counts as a share of what the cluster delivers in one half-life.
    history = {"light": 32 * cfg.usage_half_life_s * 0.1}
    snap = snapshot(NODES, [], queues=[heavy, light], usage_history=history)
    assert FairShare(snap, cfg).share("light") == pytest.approx(0.1)


def test_fair_share_interleaves_queues_as_gpus_are_handed_out() -> None:
    # a's two jobs are older, but once a1 starts a holds 8/32 and b1 goes next.
    jobs = [
        job("a1").queue("a").gpus(8).submitted(0).build(),
        job("a2").queue("a").gpus(8).submitted(1).build(),
        job("b1").queue("b").gpus(8).submitted(2).build(),
        job("b2").queue("b").gpus(8).submitted(3).build(),
    ]
    plan = decide(snapshot(NODES, jobs), PolicyConfig(), 10.0)
    assert [p.job_id for p in plan.places] == ["a1", "b1", "a2", "b2"]
    no_fair = PolicyConfig(fair_share_weight=0.0)
    plan = decide(snapshot(NODES, jobs, config=no_fair), no_fair, 10.0)
    assert [p.job_id for p in plan.places] == ["a1", "a2", "b1", "b2"]


# --- service ordering and the baselines' keys -------------------------------------------------------
def test_corral_puts_less_attained_service_first() -> None:
    fresh = job("fresh").queue("a").submitted(100).build()
    requeued = job("requeued").queue("b").submitted(0).attained(4000.0).build()  # level 1
    assert sort_ids(PolicyConfig(), [requeued, fresh]) == ["fresh", "requeued"]
    assert merged(snapshot(NODES, [requeued, fresh]), PolicyConfig(), 200.0) == ["fresh", "requeued"]
    flat = PolicyConfig(service_level_weight=0.0)
    assert sort_ids(flat, [requeued, fresh]) == ["requeued", "fresh"]
    assert merged(snapshot(NODES, [requeued, fresh], config=flat), flat, 200.0) == ["requeued", "fresh"]


def test_fifo_key_is_arrival_only() -> None:
    jobs = [
        job("high").priority("high").submitted(5).build(),
        job("low").priority("low").submitted(1).build(),
    ]
    assert sort_ids(PolicyConfig(name="fifo"), jobs) == ["low", "high"]


def test_sjf_key_uses_runtime_then_time_limit() -> None:
    jobs = [
        job("unknown").submitted(0).build(),
        job("limit").submitted(1).time_limit(50).build(),
        job("hint").submitted(2).runtime(100).time_limit(10).build(),
        job("short").submitted(3).runtime(20).build(),
    ]
    assert sort_ids(PolicyConfig(name="sjf"), jobs) == ["short", "limit", "hint", "unknown"]


def test_las_key_is_level_then_arrival() -> None:
    jobs = [
        job("old-heavy").submitted(0).attained(40_000).build(),
        job("mid").submitted(1).attained(4_000).build(),
        job("new-light").submitted(9).build(),
        job("old-light").submitted(2).attained(3_249).build(),  # below Tiresias' 3,250 GPU-s
    ]
    assert sort_ids(PolicyConfig(name="las"), jobs) == ["old-light", "new-light", "mid", "old-heavy"]


def test_ties_break_by_job_id() -> None:
    jobs = [job("b").build(), job("a").build(), job("c").build()]
    for name in ("corral", "fifo", "sjf", "las"):
        assert sort_ids(PolicyConfig(name=name), jobs) == ["a", "b", "c"]
