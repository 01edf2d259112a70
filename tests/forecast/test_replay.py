"""Start-time estimates on hand-built states, with the times worked out by hand."""

from __future__ import annotations

import math
import random
from unittest.mock import patch

import pytest

from scheduler.forecast.replay import ForecastOptions, _Follow, forecast_starts
from scheduler.forecast.runtimes import RuntimeModel
from scheduler.model.job import Job
from scheduler.model.snapshot import RunningJob
from scheduler.policy.config import PolicyConfig
from scheduler.policy.group_walk import GroupMerger
from scheduler.view import SchedulingState
from tests.builders import cluster, cluster_config, job, running

H = 3600.0
NODES = cluster(racks=1, nodes_per_rack=1)  # one node, 8 GPUs
NODE = NODES[0].id
CLUSTER = cluster_config(NODES)


def state(
    now: float, pending: list[Job], run: list[RunningJob], usage: dict[str, float] | None = None
) -> SchedulingState:
    return SchedulingState(time=now, nodes=NODES, pending=pending, running=run, usage=usage or {})


def starts(
    s: SchedulingState,
    runtimes: RuntimeModel | None = None,
    policy: PolicyConfig | None = None,
    options: ForecastOptions | None = None,
) -> dict[str, float | None]:
    forecast = forecast_starts(
        s, CLUSTER, policy or PolicyConfig(), runtimes or RuntimeModel(), options or ForecastOptions()
    )
    return dict(forecast.starts)


def test_a_job_waiting_for_a_full_node_starts_when_the_running_job_reaches_its_limit() -> None:
    a = job("a").gpus(8).time_limit(H).preemptible(False).submitted(0).build()
    b = job("b").gpus(8).time_limit(H).submitted(500).build()
    assert starts(state(2000, [b], [running(a, [NODE], 1000, on=NODES)])) == {"b": 1000 + H}


def test_the_whole_policy_is_replayed_service_preemption_included() -> None:
    # A preemptible A has used 8 GPUs × 1000 s, past the first service level (1
    # GPU-hour) and its 600 s protection: the waiting B, with none, preempts it (Tiresias' rule) and
    # starts after A's 30 s grace period, not at A's time limit.
    a = job("a").gpus(8).time_limit(H).submitted(0).build()
    b = job("b").gpus(8).time_limit(H).submitted(500).build()
    assert starts(state(2000, [b], [running(a, [NODE], 1000, on=NODES)])) == {"b": 2030}
    assert starts(
        state(2000, [b], [running(a, [NODE], 1000, on=NODES)]), policy=PolicyConfig(service_preemption=False)
    ) == {"b": 1000 + H}


def test_a_job_that_fits_now_starts_now() -> None:
    a = job("a").gpus(4).time_limit(H).submitted(0).build()
    b = job("b").gpus(4).time_limit(H).submitted(10).build()
    assert starts(state(100, [b], [running(a, [(NODE, range(4))], 0, on=NODES)])) == {"b": 100}


def test_backfill_a_short_job_runs_in_the_hole_a_long_one_waits_behind_the_reservation() -> None:
    # A holds 4 GPUs until 1 h. B (8 GPUs, first in line) reserves the node for 1 h. C (4 GPUs,
    # 30 min) ends before the reservation: it starts now. D (4 GPUs, 2 h) would delay B: it starts
    # when B ends, at 2 h.
    a = job("a").gpus(4).time_limit(H).submitted(0).build()
    b = job("b").gpus(8).time_limit(H).submitted(1).build()
    c = job("c").gpus(4).time_limit(H / 2).submitted(2).build()
    d = job("d").gpus(4).time_limit(2 * H).submitted(3).build()
    s = state(0, [b, c, d], [running(a, [(NODE, range(4))], 0, on=NODES)])
    no_service = PolicyConfig(service_preemption=False)
    assert starts(s, policy=no_service) == {"b": H, "c": 0, "d": 2 * H}
    # Without backfill there is no reservation: C and then D take the free half, and B waits until
    # both halves are free at once, when D ends (1800 + 2 h).
    no_backfill = PolicyConfig(service_preemption=False, backfill=False)
    assert starts(s, policy=no_backfill) == {"b": H / 2 + 2 * H, "c": 0, "d": H / 2}


def test_preemption_a_high_priority_job_starts_after_the_victims_grace_period() -> None:
    # A (low) has run 1000 s, past its 600 s protection; B (high) preempts it: A gets its 30 s grace,
    # B starts at 1030 and runs 1 h; then C (normal) goes before the requeued A (low).
    a = job("a").gpus(8).priority("low").time_limit(10 * H).grace(30).submitted(0).build()
    b = job("b").gpus(8).priority("high").time_limit(H).submitted(900).build()
    c = job("c").gpus(8).time_limit(H).submitted(950).build()
    s = state(1000, [b, c], [running(a, [NODE], 0, on=NODES)])
    assert starts(s) == {"b": 1030, "c": 1030 + H}


def test_without_a_time_limit_the_queue_s_learned_runtime_is_used() -> None:
    # Finished jobs of the queue ran 100, 200 and 300 s. A has run 50 s: the median of the runtimes
    # longer than 50 s is 200, so it ends 150 s from now; B then takes the node.
    learned = RuntimeModel.learn([("default", 100.0), ("default", 200.0), ("default", 300.0)])
    a = job("a").gpus(8).submitted(0).build()
    b = job("b").gpus(8).submitted(10).build()
    c = job("c").gpus(8).submitted(20).build()
    s = state(1050, [b, c], [running(a, [NODE], 1000, on=NODES)])
    # B runs the median, 200 s, then C starts.
    assert starts(s, learned, PolicyConfig(service_preemption=False)) == {"b": 1200, "c": 1400}


def test_a_running_job_past_every_learned_runtime_is_expected_to_run_as_long_again() -> None:
    learned = RuntimeModel.learn([("default", 100.0)] * 3)
    a = job("a").gpus(8).preemptible(False).submitted(0).build()
    b = job("b").gpus(8).submitted(10).build()
    assert starts(state(1500, [b], [running(a, [NODE], 1000, on=NODES)]), learned) == {"b": 2000}


def test_unknown_runtimes_and_the_bounds_give_none() -> None:
    a = job("a").gpus(8).preemptible(False).submitted(0).build()  # no limit, nothing finished: unknown
    b = job("b").gpus(8).time_limit(H).submitted(10).build()
    assert starts(
        state(100, [b], [running(a, [NODE], 0, on=NODES)]), options=ForecastOptions(tick_s=86400)
    ) == {"b": None}
    # Past the horizon.
    long = job("a").gpus(8).time_limit(10 * 86400).preemptible(False).submitted(0).build()
    s = state(100, [b], [running(long, [NODE], 0, on=NODES)])
    assert starts(s, options=ForecastOptions(horizon_s=7 * 86400, tick_s=86400)) == {"b": None}
    assert starts(s, options=ForecastOptions(horizon_s=11 * 86400, tick_s=86400)) == {"b": 10 * 86400}
    # Beyond max_jobs: only the first in the policy's order is replayed.
    c = job("c").gpus(8).time_limit(H).submitted(20).build()
    s = state(100, [c, b], [running(long.model_copy(update={"id": "x"}), [NODE], 0, on=NODES)])
    got = starts(s, options=ForecastOptions(horizon_s=20 * 86400, tick_s=86400, max_jobs=1))
    assert got == {"b": 10 * 86400, "c": None}


def test_a_job_of_an_unknown_queue_gets_none() -> None:
    b = job("b").gpus(8).queue("gone").time_limit(H).submitted(10).build()
    assert starts(state(0, [b], [])) == {"b": None}


def test_runtime_model_quantiles_and_fallbacks() -> None:
    model = RuntimeModel.learn([("q", 10.0), ("q", 30.0), ("q", 20.0), ("r", 1000.0)])
    assert model.runtime("q") == 20.0
    assert model.runtime("r") == 20.0  # one sample: below min_samples, uses every queue's: 10, 20, 30, 1000
    assert model.remaining("q", 15.0) == 5.0  # runtimes over 15 s: 20, 30; their median (nearest rank) 20
    assert RuntimeModel().runtime("q") is None
    assert math.isinf(RuntimeModel().pending_runtime(job("j").build()))
    assert RuntimeModel().pending_runtime(job("j").time_limit(60).build()) == 60


@pytest.mark.interpreted_only  # spies on the cycle's internals with mock.patch
def test_estimates_are_the_same_whether_or_not_the_replay_takes_the_shortcuts() -> None:
    """The replay follows only starts, so it skips what explanations need (policy/group_walk.py):
    on a contended queue it must estimate exactly what a replay that explains every wait does."""
    rng = random.Random(7)
    pending = [
        job(f"p{i:02d}")
        .gpus(rng.choice([1, 2, 4, 8]))
        .priority(rng.choice(["low", "normal", "high"]))
        .time_limit(rng.choice([None, H, 4 * H]))
        .submitted(rng.uniform(0, 3 * H))
        .build()
        for i in range(40)
    ]
    run = [running(job("r").gpus(8).time_limit(2 * H).submitted(0).build(), [NODE], 0, on=NODES)]
    runtimes = RuntimeModel.learn([("default", 600.0), ("default", H), ("default", 2 * H)])
    s = state(3 * H, pending, run)
    with patch.object(GroupMerger, "__iter__", autospec=True, side_effect=GroupMerger.__iter__) as walked:
        quick = starts(s, runtimes)
    assert walked.call_count > 0
    with patch.object(_Follow, "reads_reasons", True):
        assert starts(s, runtimes) == quick
    assert sum(t is not None for t in quick.values()) > 20
