"""`corral whatif`'s parts: --set keys, the replay of two configurations and its JSON shape."""

from __future__ import annotations

import pytest

from scheduler.forecast.arrivals import recent_arrivals, trace_arrivals
from scheduler.forecast.runtimes import RuntimeModel
from scheduler.forecast.settings import SettingError, apply_settings, parse_setting
from scheduler.forecast.whatif import METRICS, WhatIfInputs, compare
from scheduler.model.job import JobState
from scheduler.policy.config import PolicyConfig
from scheduler.view import SchedulingState
from tests.builders import cluster, cluster_config, job, queue, running

H = 3600.0
POLICY = PolicyConfig(service_preemption=False)  # hand-computed times: no preemption among equals
NODES = cluster(racks=1, nodes_per_rack=2)  # 2 nodes × 8 H100
CLUSTER = cluster_config(
    NODES,
    queues=[
        queue("research").quota(H100=8).cohort("c").build(),
        queue("prod").quota(H100=8).cohort("c").build(),
    ],
)


def settings(*items: str) -> list[tuple[str, object]]:
    return [parse_setting(i) for i in items]


def test_keys_follow_the_cluster_file() -> None:
    cluster, policy = apply_settings(
        CLUSTER,
        PolicyConfig(),
        settings(
            "queues.research.quota.H100=16",
            "queues.research.quota.A100=4",
            "queues.prod.borrowing_limit=0",
            "queues.prod.weight=2.5",
            "queues.research.lending_limit=null",
            "priority_classes.high.value=500",
            "policy.backfill=false",
            "policy.scan_depth=200",
            "default_time_limit_s=7200",
        ),
    )
    research, prod = cluster.queues
    assert research.quota == {"H100": 16, "A100": 4} and research.lending_limit is None
    assert prod.borrowing_limit == 0 and prod.weight == 2.5
    assert {p.name: p.value for p in cluster.priority_classes}["high"] == 500
    assert policy.backfill is False and policy.scan_depth == 200 and cluster.default_time_limit_s == 7200
    assert cluster.nodes == CLUSTER.nodes


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            "queues.reserch.quota.H100=1",
            "--set queues.reserch.quota.H100: no queue 'reserch'; the queues are prod, research",
        ),
        (
            "queues.research.quota=1",
            "--set queues.research.quota: name the GPU type, e.g. queues.research.quota.H100=128",
        ),
        (
            "queues.research.quota.H100=-1",
            "--set queues.research.quota.H100: a quota is a whole number of GPUs ≥ 0",
        ),
        (
            "queues.research.quota.H100=lots",
            "--set queues.research.quota.H100: a quota is a whole number of GPUs ≥ 0",
        ),
        (
            "queues.research.colour=red",
            "--set queues.research.colour: unknown queue field 'colour'; the fields are",
        ),
        ("queues.research.weight=0", "--set queues.research.weight: Input should be greater than 0"),
        ("policy.backfil=false", "--set policy.backfil: unknown policy knob; the knobs are name, "),
        ("policy.backfill=maybe", "--set policy.backfill: Input should be a valid boolean"),
        ("policy.scan_depth=0", "--set policy.scan_depth: Input should be greater than or equal to 1"),
        (
            "priority_classes.urgent.value=1",
            "--set priority_classes.urgent.value: no priority class 'urgent'",
        ),
        ("regions.cn.nodes=4", "--set regions.cn.nodes: unknown key; use queues.<queue>.<field>"),
        ("no-equals-sign", "--set 'no-equals-sign': expected KEY=VALUE"),
    ],
)
def test_a_bad_key_or_value_is_one_line_naming_the_key_and_the_fix(item: str, message: str) -> None:
    with pytest.raises(SettingError) as err:
        apply_settings(CLUSTER, PolicyConfig(), [parse_setting(item)])
    text = str(err.value)
    assert text.startswith(message) and "\n" not in text, text


def _inputs() -> WhatIfInputs:
    # research holds one node and waits for another; prod runs one node. 4 research jobs wait.
    r0 = job("r0").queue("research").gpus(8).time_limit(H).submitted(0).build()
    p0 = job("p0").queue("prod").gpus(8).time_limit(H).submitted(0).build()
    pending = [
        job(f"r{i}").queue("research").gpus(8).time_limit(H).submitted(10 * i).build() for i in range(1, 5)
    ]
    state = SchedulingState(
        time=100.0,
        nodes=NODES,
        pending=pending,
        running=[running(r0, [NODES[0].id], 0, on=NODES), running(p0, [NODES[1].id], 0, on=NODES)],
        usage={},
    )
    runtimes = RuntimeModel.learn([("research", H)] * 3 + [("prod", H)] * 3, use_time_limits=False)
    return WhatIfInputs(state, CLUSTER, POLICY, runtimes, [])


def test_the_json_has_baseline_changed_and_diff_per_queue_and_for_the_cluster() -> None:
    inputs = _inputs()
    cluster, policy = apply_settings(CLUSTER, POLICY, settings("policy.backfill=false"))
    result = compare(inputs, cluster, policy, {"policy.backfill": False}, 6 * H)
    assert set(result) == {"baseline", "changed", "diff"}
    for side in ("baseline", "changed"):
        assert set(result[side]["queues"]) == {"research", "prod"}
        for metrics in result[side]["queues"].values():
            assert set(METRICS) <= set(metrics)
        assert set(METRICS) - {"fair_share_ratio"} <= set(result[side]["cluster"])
    assert result["changed"]["settings"] == {"policy.backfill": False}
    assert set(result["diff"]["queues"]["research"]) >= set(METRICS)
    research = result["baseline"]["queues"]["research"]
    # Both nodes free at 1 h (prod has nothing waiting, research borrows its node): r1 and r2 start
    # at 1 h, r3 and r4 at 2 h; waits 3590, 3580, 7170, 7160 s.
    assert research["jobs"] == 4 and research["started"] == 4 and research["waiting_at_end"] == 0
    assert research["wait_p50_s"] == H - 10 and research["wait_p95_s"] == 2 * H - 30
    assert research["finished"] == 4 and result["baseline"]["cluster"]["preemptions"] == 0


def test_the_replays_run_side_by_side_give_the_same_result() -> None:
    inputs = _inputs()
    cluster, policy = apply_settings(CLUSTER, POLICY, settings("queues.research.borrowing_limit=0"))
    args = (inputs, cluster, policy, {"queues.research.borrowing_limit": 0}, 6 * H)
    apart, together = compare(*args), compare(*args, parallel=True)
    for result in (apart, together):
        for side in ("baseline", "changed"):
            del result[side]["replay_s"]  # wall time
    assert together == apart and apart["diff"]["queues"]["research"]["wait_p95_s"] > 0


def test_a_smaller_quota_without_borrowing_makes_the_queue_wait_longer() -> None:
    inputs = _inputs()
    changed = apply_settings(CLUSTER, POLICY, settings("queues.research.borrowing_limit=0"))
    result = compare(inputs, *changed, {"queues.research.borrowing_limit": 0}, 6 * H)
    before, after = result["baseline"]["queues"]["research"], result["changed"]["queues"]["research"]
    assert after["wait_p95_s"] > before["wait_p95_s"]  # one node at a time: r4 starts at 4 h (same work)
    assert after["wait_p95_s"] == 4 * H - 40
    assert result["diff"]["queues"]["research"]["wait_p95_s"] == after["wait_p95_s"] - before["wait_p95_s"]
    assert after["avg_jct_s"] > before["avg_jct_s"] and after["gpu_allocation"] == before["gpu_allocation"]


def test_arrivals_repeat_the_last_horizon_or_come_from_a_trace() -> None:
    model = RuntimeModel.learn([("research", 600.0)] * 3, use_time_limits=False)
    done = (
        job("d")
        .queue("research")
        .submitted(900)
        .build()
        .model_copy(update={"state": JobState.SUCCEEDED, "started_at": 1000.0, "finished_at": 1300.0})
    )
    waiting = job("w").queue("research").submitted(1500).build()
    old = job("o").queue("research").submitted(10).build()
    never = job("n").queue("research").submitted(950).build().model_copy(update={"state": JobState.CANCELLED})
    got = recent_arrivals([old, done, never, waiting], now=2000.0, horizon_s=1800.0, runtimes=model)
    assert [(a.job_id, a.submit_time, a.duration) for a in got] == [
        ("d+", 2700.0, 300.0),
        ("w+", 3300.0, 600.0),
    ]
    trace = [job("t1").submitted(50).trace(10), job("t2").submitted(80).trace(20)]
    assert [(a.job_id, a.submit_time) for a in trace_arrivals(trace, 1000.0)] == [
        ("trace-t1", 1000.0),
        ("trace-t2", 1030.0),
    ]
