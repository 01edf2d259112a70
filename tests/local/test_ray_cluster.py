"""LocalRayCluster: two installs side by side; stopping one from another process spares the other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from scheduler.backends.ray_backend import LABEL_NODE, LABEL_NVLINK, LABEL_RACK, LABEL_REGION
from scheduler.local.ray_cluster import LocalRayCluster, LocalRayClusterError, alive_corral_nodes, node_labels
from scheduler.model.cluster import Node
from tests.raycluster import start_cluster

REPO = Path(__file__).resolve().parents[2]


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _pids(cluster: LocalRayCluster) -> set[int]:
    return {proc.pid for proc, _ in cluster._processes()}


def test_node_labels_carry_topology_and_reject_what_ray_would() -> None:
    node = Node(id="n1", region="eu-1", rack="eu-1/r1", nvlink_domain="eu-1/r1/d0", gpu_type="H100")
    labels = node_labels(node)
    assert labels[LABEL_NODE] == "n1" and labels[LABEL_REGION] == "eu-1"
    assert labels[LABEL_RACK] == "r1" and labels[LABEL_NVLINK] == "d0"  # label values hold no "/"
    with pytest.raises(LocalRayClusterError):
        node_labels(node.model_copy(update={"gpu_type": "H100 SXM"}))


@pytest.mark.xdist_group("ray")
@pytest.mark.timeout(360)  # two installs: on a loaded 2-core CI machine one took over 50 s to start
def test_stop_from_another_process_spares_a_second_install() -> None:
    first = start_cluster([Node(id="a1", region="ra", rack="k", gpu_type="H100", gpus=2)], "la")
    try:
        second = start_cluster([Node(id="b1", region="rb", rack="k", gpu_type="H100", gpus=2)], "lb")
    except BaseException:
        first.stop()  # the first install must not outlive a failed second one
        raise
    try:
        assert first.cluster.is_up() and second.cluster.is_up()
        assert alive_corral_nodes(first.address) == {"a1"}
        first_pids, second_pids = _pids(first.cluster), _pids(second.cluster)
        names = {psutil.Process(p).name() for p in first_pids}
        assert {"raylet", "gcs_server"} <= names, names
        assert not first_pids & second_pids

        stop = "import sys; from pathlib import Path; from scheduler.local import LocalRayCluster as C; "
        stop += "C(Path(sys.argv[1])).stop()"
        subprocess.run([sys.executable, "-c", stop, str(first.root)], cwd=REPO, check=True, timeout=60)

        assert _alive(first_pids) == set()
        assert not first.cluster.is_up() and first.cluster.address is None
        assert _alive(second_pids) == second_pids
        assert second.cluster.is_up() and alive_corral_nodes(second.address) == {"b1"}
        first.cluster.stop()  # idempotent
    finally:
        first.stop()
        second.stop()
    assert _alive(second_pids) == set()
