"""A `las` replay that never ended: a preemptor lost the GPUs it preempted for, every time.

Found by tests/sim/test_properties.py::test_with_node_failures[las] (seed 27) in a clean-clone CI
run on 2026-12-05, and cut down to the jobs below by removing every job the loop did not need.
The 2×8 gang j07 (least attained service) preempted every running job; while the two with a 30 s
grace period were still leaving, `las` left j07 out (its budget counted their GPUs as taken) and
gave the free GPUs back to the jobs it had just preempted. When the two had gone, j07 preempted
those again: the same dance every cycle from t ≈ 115,000 s on, and the replay never ended.
tests/policy/test_las.py pins the decision that fixed it.
"""

from __future__ import annotations

from scheduler.model.job import JobSpec
from scheduler.model.queue import ClusterConfig, Queue
from scheduler.policy.config import PolicyConfig
from scheduler.sim.records import TraceJob
from scheduler.sim.runner import SimOptions, Simulator
from tests.builders import node, run_bounded

NODES = tuple(node(f"g0-k0-n{i}", region="g0", rack="g0/k0", gpus=8, gpu_type="H100") for i in (0, 1))
QUEUES = (
    Queue(name="q0", cohort="c0", quota={"H100": 24, "A100": 16}),
    Queue(name="q1", cohort="c1", quota={"H100": 24}, borrowing_limit=16, lending_limit=8, weight=2.0),
    Queue(name="q2", cohort="c0", quota={"A100": 40}, borrowing_limit=16, lending_limit=8, weight=2.0),
)

# id, submit, duration, queue, priority, nodes, GPUs per node, GPU type, time limit, data region,
# preemptible, min runtime, grace period
JOBS = [
    ("j00", 2850, 6500, "q0", "low", 1, 1, "any", None, "any", True, 0, 30),
    ("j03", 4200, 6250, "q1", "low", 1, 1, "H100", None, "any", True, 600, 30),
    ("j07", 4500, 2750, "q0", "low", 2, 8, "H100", None, "g0", False, 0, 30),
    ("j08", 450, 8250, "q0", "low", 1, 2, "any", 12375, "g0", False, 600, 30),
    ("j10", 2400, 1250, "q0", "normal", 2, 1, "any", None, "g0", True, 0, 30),
    ("j11", 6000, 2500, "q0", "low", 2, 1, "H100", None, "any", False, 0, 0),
    ("j12", 1050, 4500, "q1", "low", 1, 4, "H100", None, "any", True, 0, 0),
    ("j16", 5400, 7250, "q0", "low", 1, 2, "H100", 3625, "any", True, 600, 30),
    ("j18", 6000, 3000, "q0", "low", 2, 2, "H100", 1500, "g0", True, 0, 0),
    ("j21", 3750, 5000, "q1", "high", 2, 4, "any", None, "any", True, 0, 0),
    ("j23", 3750, 7500, "q0", "normal", 1, 2, "any", None, "any", False, 0, 0),
    ("j24", 4050, 3250, "q1", "normal", 1, 4, "H100", 4875, "g0", False, 0, 30),
    ("j26", 4050, 750, "q2", "high", 2, 4, "any", 375, "any", False, 0, 30),
    ("j29", 900, 9000, "q2", "high", 1, 1, "any", 13500, "any", False, 600, 30),
    ("j31", 900, 7750, "q0", "low", 2, 1, "any", 11625, "g0", False, 0, 30),
    ("j35", 2700, 8000, "q1", "normal", 1, 1, "any", None, "any", True, 0, 0),
    ("j37", 5550, 8750, "q2", "low", 1, 4, "any", 13125, "g0", True, 600, 0),
]


def _trace() -> list[TraceJob]:
    out = []
    for job_id, submit, duration, queue, prio, nodes, per_node, gpu_type, limit, region, pre, mr, gr in JOBS:
        spec = JobSpec(
            name=job_id,
            queue=queue,
            priority=prio,
            nodes=nodes,
            gpus_per_node=per_node,
            gpu_type=gpu_type,
            time_limit_s=limit,
            data_region=region,
            preemptible=pre,
            min_runtime_s=mr,
            grace_period_s=gr,
        )
        out.append(TraceJob(job_id=job_id, submit_time=float(submit), duration=float(duration), spec=spec))
    return out


def test_a_las_replay_with_node_failures_ends_and_every_job_finishes() -> None:
    options = SimOptions(validate=True, node_mtbf_s=20_000.0, node_repair_s=1200.0, seed=27)
    sim = Simulator(ClusterConfig(nodes=NODES, queues=QUEUES), _trace(), PolicyConfig(name="las"), options)
    result = run_bounded(sim, 5_000)  # it ran for ever before the fix; it now ends in a few hundred
    assert sorted(r.job_id for r in result.records) == sorted(j[0] for j in JOBS)
    assert all(r.end_state in ("SUCCEEDED", "TIMEOUT") for r in result.records)
    assert not result.rejected
