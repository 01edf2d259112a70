"""Property tests: random clusters, queues and job streams through the simulator, for every policy.

With SimOptions(validate=True) the simulator checks DESIGN.md §7's invariants after every event (no
GPU held twice, gangs all-or-nothing, quota and borrowing limits, data region, allocated ≤
capacity). On top of that, every run must end, every job that could ever run must finish (no
starvation), every job that no node could ever hold must be rejected, and every allocation span
must lie in its job's data region and GPU type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from scheduler.model.cluster import ANY, Node
from scheduler.model.job import JobSpec
from scheduler.model.queue import ClusterConfig, Queue
from scheduler.policy.config import POLICY_NAMES, PolicyConfig
from scheduler.sim.records import RunResult, TraceJob
from scheduler.sim.runner import SimOptions, Simulator
from tests.builders import node, run_bounded

GPU_TYPES = ("H100", "A100")
PRIORITIES = ("low", "normal", "high")
MAX_CYCLES = 5_000  # the longest passing runs take a few hundred cycles
# No shrinking: a failing run can take thousands of cycles, and shrinking one took minutes. Each bug
# these properties found has a small hand-made test of its own (see the report in the test files).
PHASES = (Phase.explicit, Phase.reuse, Phase.generate)


@dataclass(frozen=True)
class World:
    cluster: ClusterConfig
    jobs: list[TraceJob]


@st.composite
def nodes_strategy(draw: st.DrawFn) -> list[Node]:
    types = draw(st.sampled_from([("H100",), ("A100",), GPU_TYPES]))
    out: list[Node] = []
    for r in range(draw(st.integers(1, 3))):
        region = f"g{r}"
        for k in range(draw(st.integers(1, 3))):
            gpus = draw(st.sampled_from([4, 8]))
            gpu_type = draw(st.sampled_from(types))
            domain_size = draw(st.sampled_from([0, 2]))
            for i in range(draw(st.integers(1, 6))):
                out.append(
                    node(
                        f"{region}-k{k}-n{i}",
                        region=region,
                        rack=f"{region}/k{k}",
                        gpus=gpus,
                        gpu_type=gpu_type,
                        nvlink=f"{region}/k{k}/d{i // domain_size}" if domain_size else "",
                    )
                )
    return out


@st.composite
def queues_strategy(draw: st.DrawFn) -> list[Queue]:
    queues = []
    for q in range(draw(st.integers(1, 4))):
        quota = {t: draw(st.integers(0, 6)) * 8 for t in GPU_TYPES if draw(st.booleans()) or q == 0}
        queues.append(
            Queue(
                name=f"q{q}",
                cohort=draw(st.sampled_from([None, "c0", "c0", "c1"])),
                quota=quota,
                borrowing_limit=draw(st.one_of(st.none(), st.integers(0, 4).map(lambda n: n * 8))),
                lending_limit=draw(st.one_of(st.none(), st.integers(0, 4).map(lambda n: n * 8))),
                weight=draw(st.sampled_from([1.0, 2.0])),
            )
        )
    return queues


@st.composite
def jobs_strategy(draw: st.DrawFn, regions: list[str], queues: list[str]) -> list[TraceJob]:
    jobs = []
    for i in range(draw(st.integers(1, 40))):
        duration = float(draw(st.integers(1, 40)) * 250)
        limit = draw(st.sampled_from([None, None, 0.5, 1.5]))
        spec = JobSpec(
            name=f"j{i}",
            queue=draw(st.sampled_from(queues)),
            priority=draw(st.sampled_from(PRIORITIES)),
            nodes=draw(st.sampled_from([1, 1, 1, 2, 3])),
            gpus_per_node=draw(st.sampled_from([1, 2, 4, 8])),
            gpu_type=draw(st.sampled_from([ANY, ANY, *GPU_TYPES])),
            data_region=draw(st.sampled_from([ANY, ANY, *regions, "nowhere"])),
            time_limit_s=None if limit is None else duration * limit,
            preemptible=draw(st.booleans()),
            min_runtime_s=draw(st.sampled_from([0.0, 0.0, 600.0])),
            grace_period_s=draw(st.sampled_from([0.0, 30.0])),
        )
        submit = float(draw(st.integers(0, 40)) * 150)
        jobs.append(TraceJob(job_id=f"j{i:02d}", submit_time=submit, duration=duration, spec=spec))
    return jobs


@st.composite
def worlds(draw: st.DrawFn) -> World:
    nodes = draw(nodes_strategy())
    queues = draw(queues_strategy())
    regions = sorted({n.region for n in nodes})
    jobs = draw(jobs_strategy(regions, [q.name for q in queues]))
    cluster = ClusterConfig(nodes=tuple(nodes), queues=tuple(queues))
    # A job its queue could never be admitted for (but some pool could hold) waits for ever and
    # the simulator never ends: a known bug with its own test
    # (tests/sim/test_runner.py::test_job_beyond_its_queues_reach_does_not_hang_the_simulation).
    # Leave such jobs out here so that these properties check everything else.
    jobs = [j for j in jobs if can_run(cluster, j.spec) or not fits_somewhere(cluster, j.spec)]
    return World(cluster, jobs)


# --- what "could ever run" means ---------------------------------------------------------------------------
def pools_for(cluster: ClusterConfig, spec: JobSpec) -> dict[tuple[str, str], list[Node]]:
    pools: dict[tuple[str, str], list[Node]] = {}
    for n in cluster.nodes:
        if spec.data_region in (ANY, n.region) and spec.gpu_type in (ANY, n.gpu_type):
            pools.setdefault((n.region, n.gpu_type), []).append(n)
    return pools


def holds(nodes: list[Node], spec: JobSpec) -> bool:
    return sum(1 for n in nodes if n.gpus >= spec.gpus_per_node) >= spec.nodes


def fits_somewhere(cluster: ClusterConfig, spec: JobSpec) -> bool:
    return any(holds(nodes, spec) for nodes in pools_for(cluster, spec).values())


def max_admissible(cluster: ClusterConfig, queue_name: str, gpu_type: str) -> float:
    """The most GPUs of a type the queue can ever hold: its quota plus what its cohort could lend."""
    queues = {q.name: q for q in cluster.queues}
    q = queues[queue_name]
    if q.cohort is None:
        return q.nominal(gpu_type)
    lendable = 0.0
    for other in cluster.queues:
        if other.name != q.name and other.cohort == q.cohort:
            idle = other.nominal(gpu_type)
            lendable += idle if other.lending_limit is None else min(idle, other.lending_limit)
    limit = math.inf if q.borrowing_limit is None else q.borrowing_limit
    return q.nominal(gpu_type) + min(lendable, limit)


def can_run(cluster: ClusterConfig, spec: JobSpec) -> bool:
    return any(
        holds(nodes, spec) and spec.gpus <= max_admissible(cluster, spec.queue, gpu_type)
        for (_region, gpu_type), nodes in pools_for(cluster, spec).items()
    )


# --- running and checking ---------------------------------------------------------------------------------
def simulate(world: World, policy: str, options: SimOptions) -> RunResult:
    sim = Simulator(world.cluster, world.jobs, PolicyConfig(name=policy), options)
    return run_bounded(sim, MAX_CYCLES)


def check(world: World, result: RunResult) -> None:
    specs = {j.job_id: j.spec for j in world.jobs}
    records = {r.job_id: r for r in result.records}
    rejected = set(result.rejected)
    for j in world.jobs:
        if can_run(world.cluster, j.spec):
            assert j.job_id not in rejected, f"{j.job_id} could run but was rejected"
            assert j.job_id in records, f"{j.job_id} never finished"
            assert records[j.job_id].end_state in ("SUCCEEDED", "TIMEOUT"), records[j.job_id]
        else:
            assert j.job_id in rejected, f"{j.job_id} can never fit but was not rejected"
            assert j.job_id not in records
    nodes = {n.id: n for n in world.cluster.nodes}
    for s in result.spans:
        spec = specs[s.job_id]
        assert len(s.allocation) == spec.nodes
        for node_id, region, _rack, gpu_type, gpus in s.allocation:
            assert nodes[node_id].region == region
            assert spec.data_region in (ANY, region), (s.job_id, spec.data_region, node_id)
            assert spec.gpu_type in (ANY, gpu_type), (s.job_id, spec.gpu_type, node_id)
            assert len(gpus) == spec.gpus_per_node
    for rec in result.records:
        assert rec.first_start >= rec.submit_time
        assert rec.finish_time >= rec.first_start
        if rec.end_state == "SUCCEEDED":
            assert rec.finish_time - rec.first_start >= rec.duration - 1e-6


SETTINGS = settings(
    max_examples=60,
    deadline=None,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("policy", POLICY_NAMES)
@SETTINGS
@given(world=worlds())
def test_every_runnable_job_finishes_and_invariants_hold(policy: str, world: World) -> None:
    result = simulate(world, policy, SimOptions(validate=True, record_spans=True, tick_s=300.0))
    check(world, result)


@pytest.mark.parametrize("policy", POLICY_NAMES)
@settings(max_examples=25, deadline=None, phases=PHASES, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds(), seed=st.integers(0, 1000))
def test_with_node_failures(policy: str, world: World, seed: int) -> None:
    options = SimOptions(
        validate=True, record_spans=True, node_mtbf_s=20_000.0, node_repair_s=1200.0, seed=seed
    )
    result = simulate(world, policy, options)
    check(world, result)
