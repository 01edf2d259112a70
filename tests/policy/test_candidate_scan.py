"""The victim-candidate scan a simulator reuses between cycles (snapshot.memo): until its
`valid_until`, a fresh scan of the same running jobs finds exactly the same — and a cycle that
reuses it decides exactly what a cycle without the memo decides."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model.snapshot import RunningJob
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from scheduler.policy.preempt import scan_candidates
from tests.builders import cluster, job, running, snapshot

NODES = cluster(racks=1, nodes_per_rack=8)  # 64 GPUs
CONFIG = PolicyConfig(default_min_runtime_s=600.0, las_thresholds_gpu_s=(3600.0, 36000.0))

one_job = st.tuples(
    st.integers(1, 8),  # GPUs on its node
    st.floats(0, 20_000),  # started this long before t0
    st.floats(0, 40_000),  # GPU-seconds attained in earlier attempts
    st.integers(0, 3),  # earlier preemptions
    st.sampled_from(["low", "normal", "high"]),
    st.booleans(),  # preemptible
    st.sampled_from(["a", "b"]),
)


def _running(specs: list[tuple[int, float, float, int, str, bool, str]], t0: float) -> list[RunningJob]:
    out = []
    for i, (gpus, age, attained, preemptions, priority, preemptible, queue_name) in enumerate(specs):
        b = job(f"j{i}").queue(queue_name).priority(priority).gpus(gpus).attained(attained)
        b = b.preemptible(preemptible)
        if preemptions:
            b = b.preemptions(preemptions)
        out.append(running(b.build(), [(NODES[i].id, tuple(range(gpus)))], t0 - age, on=NODES))
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(one_job, min_size=1, max_size=8), st.floats(0, 1), st.floats(0, 50_000))
def test_a_scan_holds_until_its_valid_until(specs: list, fraction: float, t0: float) -> None:  # type: ignore[type-arg]
    jobs = _running(specs, t0)
    snap = snapshot(NODES, [], jobs)
    first = scan_candidates(snap, jobs, t0, CONFIG)
    assert first.valid_until > t0 or first.valid_until < t0 + 1e-3  # never in the past but for the margin
    horizon = min(first.valid_until, t0 + 100_000.0)
    later = t0 + fraction * max(0.0, horizon - t0)
    if later >= first.valid_until:
        return
    again = scan_candidates(snap, jobs, later, CONFIG)
    assert (again.found, again.summary, again.top) == (first.found, first.summary, first.top)


full_node_job = st.tuples(
    st.just(8),  # every node full: the waiting jobs start only by preempting
    st.floats(0, 1_000),  # young: protections end during the steps
    st.floats(0, 40_000),
    st.integers(0, 2),
    st.sampled_from(["low", "normal"]),
    st.booleans(),
    st.sampled_from(["a", "b"]),
)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(full_node_job, min_size=8, max_size=8),
    st.lists(st.floats(0, 3_000), min_size=1, max_size=6),
)
def test_cycles_that_reuse_scans_decide_what_fresh_cycles_decide(specs: list, steps: list[float]) -> None:  # type: ignore[type-arg]
    jobs = _running(specs, 0.0)
    pending = [
        job("w-small").queue("a").priority("normal").gpus(1).build(),
        job("w-wide").queue("b").priority("high").gpus(8).build(),
    ]
    fresh = snapshot(NODES, pending, jobs, config=CONFIG)
    lent = replace(fresh, running_version=7, memo={})  # the same running jobs at every step
    now = 0.0
    for step in steps:
        now += step
        assert decide(lent, CONFIG, now) == decide(fresh, CONFIG, now)
