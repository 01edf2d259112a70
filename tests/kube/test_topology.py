"""KubernetesTopology and TopologyBackend against kmock serving real Node and Pod objects to the
official client: labels map per Ray node, cordons drain, NotReady is down, residency conflicts and
unlocated nodes are out of scheduling and reported, API errors keep the last good view."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.backends.base import NodeAddress
from scheduler.backends.ray_nodes import address_from_ray
from scheduler.kube.backend import LABEL_KUBE_NODE, LABEL_KUBE_STATE, TopologyBackend
from scheduler.kube.topology import KubernetesTopology
from scheduler.kube.wiring import own_namespace, with_kubernetes_topology
from scheduler.model.cluster import NodeState
from tests.kube.conftest import NAMESPACE, NODES, PODS, KubeCluster, RayLikeBackend, Ticker, ray_info


def _two_regions(kube: KubeCluster) -> RayLikeBackend:
    """Three Ray worker pods on three Kubernetes nodes: two in eu (racks a, b), one in us."""
    kube.put_node("k-eu-1", region="eu", zone="eu-1a", rack="a", gpu_product="NVIDIA-H100-80GB-HBM3")
    kube.put_node("k-eu-2", region="eu", zone="eu-1b", rack="b", gpu_product="NVIDIA-H100-80GB-HBM3")
    kube.put_node("k-us-1", region="us", zone="us-1a", rack="a", gpu_product="NVIDIA-A100-SXM4-80GB")
    kube.put_pod("gpu-worker-1", ip="10.0.0.1", node="k-eu-1")
    kube.put_pod("gpu-worker-2", ip="10.0.0.2", node="k-eu-2")
    kube.put_pod("gpu-worker-3", ip="10.0.0.3", node="k-us-1")
    return RayLikeBackend(
        [
            ray_info(
                "eu-0", region="eu", ip="10.0.0.1", hostname="gpu-worker-1", rack="declared", nvlink="d0"
            ),
            ray_info("eu-1", region="eu", ip="10.0.0.2", hostname="gpu-worker-2"),
            ray_info("us-0", region="us", ip="10.0.0.3", hostname="gpu-worker-3", gpu_type="A100"),
        ]
    )


def _topology(kube: KubeCluster, ticker: Ticker, **kw: object) -> KubernetesTopology:
    return KubernetesTopology(kube.api_client(), NAMESPACE, monotonic=ticker, **kw)  # type: ignore[arg-type]


def _wrap(kube: KubeCluster, inner: RayLikeBackend, ticker: Ticker, **kw: object) -> TopologyBackend:
    return TopologyBackend(inner, _topology(kube, ticker, **kw), monotonic=ticker)


def test_labels_map_to_each_ray_node(kube: KubeCluster) -> None:
    ticker = Ticker()
    backend = _wrap(kube, _two_regions(kube), ticker)
    nodes = {n.id: n for n in backend.nodes()}
    assert {n: (x.region, x.zone, x.rack, x.state) for n, x in nodes.items()} == {
        "eu-0": ("eu", "eu-1a", "eu/a", NodeState.READY),  # Kubernetes' rack wins over the declared one
        "eu-1": ("eu", "eu-1b", "eu/b", NodeState.READY),
        "us-0": ("us", "us-1a", "us/a", NodeState.READY),
    }
    assert nodes["eu-0"].nvlink_domain == "eu/a/d0"  # follows its rack
    assert nodes["eu-0"].labels[LABEL_KUBE_NODE] == "k-eu-1"
    assert nodes["us-0"].labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert LABEL_KUBE_STATE not in nodes["eu-0"].labels
    assert backend.conflicts() == {}
    assert backend.gpu_mismatches() == {}
    where = backend.topology.view().locate(NodeAddress("10.0.0.3", "gpu-worker-3"))
    assert (where.pod, where.kube_node, where.region, where.zone, where.rack, where.gpu_product) == (
        "gpu-worker-3",
        "k-us-1",
        "us",
        "us-1a",
        "a",
        "NVIDIA-A100-SXM4-80GB",
    )
    assert where.ready and not where.cordoned
    assert backend.health() == "ok"


def test_pod_found_by_name_when_its_ip_is_not_listed_and_other_pods_are_ignored(kube: KubeCluster) -> None:
    kube.put_node("k1", region="eu")
    kube.put_node("k2", region="us")
    kube.put_pod("gpu-worker-9", ip="", node="k1")  # no IP in the listing yet: found by name
    # Not Ray pods, or ended: never taken for a Ray node, though they carry its IP.
    kube.put_pod("web", ip="10.0.0.7", node="k2", labels={"app": "web"})
    kube.put_pod("old-worker", ip="10.0.0.7", node="k2", phase="Succeeded")
    kube.put_pod("other-ns", ip="10.0.0.7", node="k2", namespace="elsewhere")
    kube.put_pod("gpu-worker-7", ip="10.0.0.7", node="k1")
    topology = _topology(kube, Ticker())
    view = topology.view()
    assert view.locate(NodeAddress("10.0.0.9", "gpu-worker-9.gpu-headless.corral.svc")).kube_node == "k1"
    assert view.locate(NodeAddress("10.0.0.7", "")).pod == "gpu-worker-7"
    assert not view.locate(NodeAddress("10.0.0.8", "nobody")).found


def test_a_cordoned_node_drains_and_a_not_ready_one_is_down(kube: KubeCluster) -> None:
    ticker = Ticker()
    backend = _wrap(kube, _two_regions(kube), ticker)
    assert all(n.state is NodeState.READY for n in backend.nodes())
    kube.put_node("k-eu-1", region="eu", zone="eu-1a", rack="a", cordoned=True)
    kube.put_node("k-us-1", region="us", zone="us-1a", rack="a", ready="Unknown")
    states = {n.id: n.state for n in backend.nodes()}
    assert states["eu-0"] is NodeState.READY, "the view is cached: no API call per cycle"
    ticker.t += 5.0
    nodes = {n.id: n for n in backend.nodes()}
    assert {n: x.state for n, x in nodes.items()} == {
        "eu-0": NodeState.DRAINING,
        "eu-1": NodeState.READY,
        "us-0": NodeState.DOWN,
    }
    assert nodes["eu-0"].labels[LABEL_KUBE_STATE] == "cordoned"
    assert nodes["us-0"].labels[LABEL_KUBE_STATE] == "not-ready"
    assert "NodeStatusUnknown" in backend.topology.view().nodes["k-us-1"].not_ready
    assert backend.conflicts() == {}, "a cordon is not a residency conflict"
    kube.put_node("k-eu-1", region="eu", zone="eu-1a", rack="a")
    ticker.t += 5.0
    assert {n.id: n.state for n in backend.nodes()}["eu-0"] is NodeState.READY


def test_list_calls_are_cached_between_refreshes(kube: KubeCluster) -> None:
    ticker = Ticker()
    backend = _wrap(kube, _two_regions(kube), ticker)
    for _ in range(20):
        backend.nodes()
        ticker.t += 0.1  # 2 s of controller steps
    pod_lists, node_lists = list(kube.handler["list", PODS]), list(kube.handler["list", NODES])
    assert (len(pod_lists), len(node_lists)) == (1, 1), "one listing per refresh, not per cycle"
    assert pod_lists[0].url.path == f"/api/v1/namespaces/{NAMESPACE}/pods"
    assert pod_lists[0].params.get("labelSelector") == "ray.io/is-ray-node=yes"
    ticker.t += 3.1  # 5 s after the first listing
    backend.nodes()
    assert len(list(kube.handler["list", PODS])) == 2


def test_a_region_conflict_takes_the_node_out_and_is_reported(kube: KubeCluster) -> None:
    ticker = Ticker()
    backend = _wrap(kube, _two_regions(kube), ticker)
    kube.put_node("k-eu-2", region="us", zone="us-1c", rack="b")  # relabelled, or the pod moved
    ticker.t += 5.0
    nodes = {n.id: n for n in backend.nodes()}
    assert nodes["eu-1"].state is NodeState.DRAINING
    assert nodes["eu-1"].region == "eu", "the declared region stays: the node is out, not moved"
    assert nodes["eu-1"].labels[LABEL_KUBE_STATE] == "region-conflict"
    conflicts = backend.conflicts()
    assert list(conflicts) == ["eu-1"]
    assert "declares region eu" in conflicts["eu-1"] and "k-eu-2 is in region us" in conflicts["eu-1"]
    kube.put_node("k-eu-2", region="eu", zone="eu-1b", rack="b")
    ticker.t += 5.0
    assert {n.id: n.state for n in backend.nodes()}["eu-1"] is NodeState.READY
    assert backend.conflicts() == {}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("no-region-label", "has no topology.kubernetes.io/region label"),
        ("no-declared-region", "declares no corral.dev/region label"),
        ("kube-node-gone", "which does not exist"),
    ],
)
def test_residency_that_cannot_be_checked_is_a_conflict(
    kube: KubeCluster, change: str, expected: str
) -> None:
    ticker = Ticker()
    inner = _two_regions(kube)
    if change == "no-region-label":
        kube.put_node("k-eu-2", region=None, zone="eu-1b", rack="b")
    elif change == "no-declared-region":
        inner.infos[1] = ray_info("eu-1", region=None, ip="10.0.0.2", hostname="gpu-worker-2")
    else:
        kube.put_pod("gpu-worker-2", ip="10.0.0.2", node="k-gone")
    backend = _wrap(kube, inner, ticker)
    nodes = {n.id: n for n in backend.nodes()}
    assert nodes["eu-1"].state is NodeState.DRAINING
    assert expected in backend.conflicts()["eu-1"]
    assert set(backend.conflicts()) == {"eu-1"}


def test_a_ray_node_without_a_pod_is_out_and_reported_after_the_join_grace(kube: KubeCluster) -> None:
    ticker = Ticker()
    inner = _two_regions(kube)
    backend = _wrap(kube, inner, ticker)
    backend.nodes()
    inner.infos.append(ray_info("eu-2", region="eu", ip="10.0.0.4", hostname="gpu-worker-4"))
    nodes = {n.id: n for n in backend.nodes()}
    assert nodes["eu-2"].state is NodeState.DRAINING, "never placed on before it is located"
    assert nodes["eu-2"].labels[LABEL_KUBE_STATE] == "unlocated"
    assert "eu-2" not in backend.conflicts(), "just joined: its pod may not be listed yet"
    ticker.t += 1.0  # an early refresh was asked; still no such pod
    backend.nodes()
    ticker.t += backend.join_grace_s
    backend.nodes()
    assert "no Ray pod in namespace corral has IP 10.0.0.4" in backend.conflicts()["eu-2"]
    kube.put_pod("gpu-worker-4", ip="10.0.0.4", node="k-eu-1")
    ticker.t += 5.0
    assert {n.id: n.state for n in backend.nodes()}["eu-2"] is NodeState.READY
    assert backend.conflicts() == {}


def test_a_new_ray_node_is_located_by_an_early_refresh(kube: KubeCluster) -> None:
    ticker = Ticker()
    inner = _two_regions(kube)
    backend = _wrap(kube, inner, ticker)
    backend.nodes()
    kube.put_pod("gpu-worker-4", ip="10.0.0.4", node="k-eu-1")  # created after the last listing
    inner.infos.append(ray_info("eu-2", region="eu", ip="10.0.0.4", hostname="gpu-worker-4"))
    assert {n.id: n.state for n in backend.nodes()}["eu-2"] is NodeState.DRAINING
    ticker.t += 1.0  # min_refresh_s, not the 5 s period
    assert {n.id: n.state for n in backend.nodes()}["eu-2"] is NodeState.READY
    assert backend.conflicts() == {}


def test_api_errors_keep_the_last_good_view(kube: KubeCluster) -> None:
    ticker = Ticker()
    backend = _wrap(kube, _two_regions(kube), ticker, stale_s=30.0)
    kube.put_node("k-eu-1", region="eu", zone="eu-1a", rack="a", cordoned=True)
    ticker.t += 5.0
    assert {n.id: n.state for n in backend.nodes()}["eu-0"] is NodeState.DRAINING
    kube.failing = True
    kube.put_node("k-eu-1", region="eu", zone="eu-1a", rack="a")  # uncordoned, but unreadable now
    for _ in range(3):
        ticker.t += 5.0
        states = {n.id: n.state for n in backend.nodes()}
        assert states == {"eu-0": NodeState.DRAINING, "eu-1": NodeState.READY, "us-0": NodeState.READY}
    assert "503" in backend.topology.last_error
    assert backend.health() == "ok", "a few failed refreshes: the view is still recent"
    ticker.t += 20.0
    backend.nodes()
    assert backend.health().startswith("Kubernetes topology 35 s old (refresh failing: HTTP 503")
    assert backend.conflicts() == {}
    kube.failing = False
    ticker.t += 5.0
    assert {n.id: n.state for n in backend.nodes()}["eu-0"] is NodeState.READY
    assert backend.health() == "ok"


def test_without_any_view_every_node_is_out_of_scheduling(kube: KubeCluster) -> None:
    kube.failing = True
    ticker = Ticker()
    backend = _wrap(kube, _two_regions(kube), ticker)
    assert all(n.state is NodeState.DRAINING for n in backend.nodes())
    assert set(backend.conflicts()) == {"eu-0", "eu-1", "us-0"}
    assert "no view of the Kubernetes API yet" in backend.conflicts()["eu-0"]
    assert backend.health().startswith("no Kubernetes topology yet: HTTP 503")


def test_a_gpu_product_mismatch_is_reported_and_the_node_stays(kube: KubeCluster) -> None:
    ticker = Ticker()
    backend = _wrap(kube, _two_regions(kube), ticker)
    kube.put_node("k-eu-2", region="eu", zone="eu-1b", rack="b", gpu_product="NVIDIA-A100-SXM4-40GB")
    ticker.t += 5.0
    assert {n.id: n.state for n in backend.nodes()}["eu-1"] is NodeState.READY
    assert backend.gpu_mismatches() == {
        "eu-1": "declared H100, but Kubernetes node k-eu-2 has NVIDIA-A100-SXM4-40GB"
    }


def test_a_configured_rack_label(kube: KubeCluster) -> None:
    kube.put_node("k1", region="eu", rack="row7-rack3", rack_label="example.com/rack")
    kube.put_pod("gpu-worker-1", ip="10.0.0.1", node="k1")
    inner = RayLikeBackend([ray_info("n1", region="eu", ip="10.0.0.1")])
    backend = _wrap(kube, inner, Ticker(), rack_label="example.com/rack")
    assert backend.nodes()[0].rack == "eu/row7-rack3"


def test_the_wrapper_delegates_the_backend(kube: KubeCluster) -> None:
    inner = _two_regions(kube)
    backend = _wrap(kube, inner, Ticker())

    def wake() -> None:
        pass

    backend.on_event = wake
    assert inner.on_event is wake  # type: ignore[attr-defined]
    assert backend.attempt_pairs() == set()
    assert backend.health() == "no Kubernetes topology yet: not read yet"
    backend.nodes()
    assert backend.health() == "ok"
    inner.health_answer = "ray: GCS unreachable"
    assert backend.health() == "ray: GCS unreachable"
    with pytest.raises(AttributeError):
        _ = backend.no_such_thing


def test_wiring_reads_the_pods_namespace_and_refreshes_in_the_background(
    kube: KubeCluster, tmp_path: Path
) -> None:
    ns = tmp_path / "namespace"
    ns.write_text("corral\n")
    assert own_namespace(ns) == "corral"
    with pytest.raises(RuntimeError, match="--kubernetes-namespace"):
        own_namespace(tmp_path / "missing")
    backend = with_kubernetes_topology(
        _two_regions(kube),
        namespace="corral",
        rack_label="corral.dev/rack",
        refresh_s=0.2,
        api_client=kube.api_client(),
    )
    try:
        assert {n.id: n.state for n in backend.nodes()}["eu-0"] is NodeState.READY  # read at start
        kube.put_node("k-eu-1", region="eu", zone="eu-1a", rack="a", cordoned=True)
        import time

        deadline = time.monotonic() + 10
        while {n.id: n.state for n in backend.nodes()}["eu-0"] is not NodeState.DRAINING:
            assert time.monotonic() < deadline, "the background refresh never saw the cordon"
            time.sleep(0.05)
    finally:
        backend.close()


def test_address_from_ray() -> None:
    info = ray_info("n1", region="eu", ip="10.1.2.3", hostname="gpu-worker-1")
    assert address_from_ray(info) == NodeAddress("10.1.2.3", "gpu-worker-1")
    assert address_from_ray({}) == NodeAddress("", "")
