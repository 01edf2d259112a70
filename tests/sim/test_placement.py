"""`--placement gpu-count`: GPUs counted without node boundaries, by rewriting the replay."""

from __future__ import annotations

from scheduler.policy.config import PolicyConfig
from scheduler.sim.placement import apply_placement, gpu_count
from scheduler.sim.runner import SimOptions, Simulator
from tests.builders import cluster, cluster_config, job

NODES = cluster(racks=1, nodes_per_rack=2, gpus=4)  # two nodes of 4 GPUs
JOBS = [
    job("a").gpus(3).submitted(0).trace(100.0),
    job("b").gpus(3).submitted(0).trace(100.0),
    job("c").gpus(2).submitted(1).trace(100.0),  # 2 GPUs free, one on each node
]


def test_every_gpu_becomes_a_node_and_every_job_a_gang_of_one_gpu_nodes() -> None:
    config, jobs = gpu_count(cluster_config(NODES), JOBS)
    assert len(config.nodes) == 8 and {n.gpus for n in config.nodes} == {1}
    assert config.total_gpus == 8
    assert {n.rack for n in config.nodes} == {NODES[0].rack}
    assert [(j.spec.nodes, j.spec.gpus_per_node) for j in jobs] == [(3, 1), (3, 1), (2, 1)]
    assert [j.duration for j in jobs] == [100.0, 100.0, 100.0]


def test_nodes_placement_changes_nothing() -> None:
    config = cluster_config(NODES)
    assert apply_placement("nodes", config, JOBS) == (config, JOBS)


def _start_of_c(placement: str) -> float:
    config, jobs = apply_placement(placement, cluster_config(NODES), JOBS)  # type: ignore[arg-type]
    result = Simulator(config, jobs, PolicyConfig(name="fifo"), SimOptions(validate=True)).run()
    return {r.job_id: r.first_start for r in result.records}["c"]


def test_a_job_starts_on_gpus_of_several_nodes_only_when_counting() -> None:
    assert _start_of_c("gpu-count") == 1.0
    assert _start_of_c("nodes") == 100.0  # waits for a whole node's 2 GPUs
