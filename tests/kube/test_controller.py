"""The real Controller (SQLite store, real policy, virtual clock) on a Ray-like backend wrapped by
TopologyBackend, the Kubernetes side served by kmock: a cordoned Kubernetes node gets no new job
while its running job runs on, a region conflict takes the node out even for jobs of its declared
region, is audited once and exported, and its clearing brings the node back and is audited."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.backends.base import EventKind
from scheduler.clock import VirtualClock
from scheduler.config.live import LiveConfig, parse_live_config
from scheduler.control.controller import Controller
from scheduler.kube.backend import TopologyBackend
from scheduler.kube.topology import KubernetesTopology
from scheduler.model.cluster import NodeState
from scheduler.model.job import JobSpec, JobState
from scheduler.store.store import Store
from tests.kube.conftest import NAMESPACE, KubeCluster, RayLikeBackend, Ticker, ray_info

CONFIG: LiveConfig = parse_live_config(
    """
regions:
  - name: eu
    racks:
      - {name: r1, nodes: 2, gpu_type: H100, gpus_per_node: 8, cpus: 2, memory_gb: 16}
  - name: us
    racks:
      - {name: r1, nodes: 1, gpu_type: H100, gpus_per_node: 8, cpus: 2, memory_gb: 16}
queues:
  - {name: vision, quota: {H100: 24}}
policy:
  default_min_runtime_s: 0
"""
)
EU0, EU1, US0 = "eu-r1-n00", "eu-r1-n01", "us-r1-n00"
KUBE_NODE = {EU0: "k-eu-0", EU1: "k-eu-1", US0: "k-us-0"}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(f"sqlite:///{tmp_path / 'corral.db'}")
    yield s  # type: ignore[misc]
    s.close()


class Rig:
    """Controller + store + Ray-like nodes behind TopologyBackend + kmock, on virtual clocks."""

    def __init__(self, store: Store, kube: KubeCluster) -> None:
        self.store, self.kube = store, kube
        self.clock, self.ticker = VirtualClock(1000.0), Ticker()
        for node_id, region in ((EU0, "eu"), (EU1, "eu"), (US0, "us")):
            self.label(node_id, region=region)
        for i, node_id in enumerate((EU0, EU1, US0)):
            kube.put_pod(f"gpu-worker-{i}", ip=f"10.0.0.{i}", node=KUBE_NODE[node_id])
        self.inner = RayLikeBackend(
            [
                ray_info(node_id, region=node_id[:2], ip=f"10.0.0.{i}", hostname=f"gpu-worker-{i}")
                for i, node_id in enumerate((EU0, EU1, US0))
            ]
        )
        topology = KubernetesTopology(kube.api_client(), NAMESPACE, monotonic=self.ticker)
        self.backend = TopologyBackend(self.inner, topology, monotonic=self.ticker)
        self.c = Controller(store, self.backend, CONFIG, self.clock, min_decide_interval_s=0.0)  # type: ignore[arg-type]
        store.sync_queues(list(self.c.queues.values()))
        self.c.recover()

    def label(self, node_id: str, *, region: str, cordoned: bool = False, ready: str = "True") -> None:
        self.kube.put_node(
            KUBE_NODE[node_id], region=region, zone=f"{region}-1a", rack="r1", cordoned=cordoned, ready=ready
        )

    def step(self, seconds: float = 5.0) -> None:
        """Time passes (a topology refresh is due after 5 s), then one controller step."""
        self.ticker.t += seconds
        self.clock.advance_to(self.clock.now() + seconds)
        self.c.step()

    def submit(self, region: str = "eu") -> str:
        spec = JobSpec(command=["true"], queue="vision", gpus_per_node=8, data_region=region)
        rec, _ = self.store.submit(spec, "vision", self.clock.now())
        return rec.id

    def node_of(self, job: str) -> str | None:
        rec = self.store.get(job)
        assert rec is not None
        return rec.allocation.node_ids[0] if rec.allocation is not None else None

    def state(self, node_id: str) -> NodeState:
        return next(s.node.state for s in self.c.view().nodes if s.node.id == node_id)

    def run(self, job: str) -> None:
        self.inner.emit(EventKind.STARTED, job, 0, self.clock.now())

    def conflicts_gauge(self) -> float | None:
        return self.c.metrics.registry.get_sample_value("corral_residency_label_conflicts")

    def audit(self, decision: str) -> list[tuple[str, ...]]:
        return [a.nodes for a in self.store.audit() if a.decision == decision]


def test_a_cordoned_kubernetes_node_runs_its_job_on_and_takes_no_new_one(
    store: Store, kube: KubeCluster
) -> None:
    rig = Rig(store, kube)
    first = rig.submit()
    rig.step()
    node = rig.node_of(first)
    assert node in (EU0, EU1)
    other = EU1 if node == EU0 else EU0
    rig.run(first)
    rig.step(0.1)
    rig.label(node, region="eu", cordoned=True)  # kubectl cordon
    rig.step()
    assert rig.state(node) is NodeState.DRAINING
    rec = store.get(first)
    assert rec is not None and rec.state is JobState.RUNNING and rig.inner.stopped == []
    second, third = rig.submit(), rig.submit()
    rig.step()
    assert rig.node_of(second) == other
    assert rig.node_of(third) is None, "no new job on the cordoned node"
    rig.inner.emit(EventKind.EXITED, first, 0, rig.clock.now(), 0)  # its GPUs are free now
    for _ in range(3):
        rig.step()
        assert rig.node_of(third) is None, "a cordoned node stays out even when free"
    assert [a.nodes for a in store.audit() if a.decision == "place" and node in a.nodes] == [(node,)]
    rig.label(node, region="eu")  # kubectl uncordon
    rig.step()
    assert rig.state(node) is NodeState.READY
    assert rig.node_of(third) == node
    assert rig.audit("residency_conflict") == []


def test_a_not_ready_kubernetes_node_is_down(store: Store, kube: KubeCluster) -> None:
    rig = Rig(store, kube)
    rig.label(US0, region="us", ready="Unknown")
    rig.step()
    assert rig.state(US0) is NodeState.DOWN
    job = rig.submit("us")
    rig.step()
    assert rig.node_of(job) is None
    rig.label(US0, region="us")
    rig.step()
    assert rig.state(US0) is NodeState.READY and rig.node_of(job) == US0


def test_a_region_conflict_takes_the_node_out_is_audited_once_and_alerted(
    store: Store, kube: KubeCluster
) -> None:
    rig = Rig(store, kube)
    rig.step()
    assert rig.conflicts_gauge() == 0
    rig.label(EU1, region="us")  # the Kubernetes node under eu-r1-n01 says us
    rig.step()
    assert rig.state(EU1) is NodeState.DRAINING
    assert rig.conflicts_gauge() == 1
    eu_jobs = [rig.submit("eu") for _ in range(2)]
    us_jobs = [rig.submit("us") for _ in range(2)]
    for _ in range(4):
        rig.step()
    placed = {job: rig.node_of(job) for job in eu_jobs + us_jobs}
    assert EU1 not in placed.values(), placed
    assert sorted(n for n in placed.values() if n) == [EU0, US0]
    audited = [a for a in store.audit() if a.decision == "residency_conflict"]
    assert len(audited) == 1, "audited once, not at every step"
    entry = audited[0]
    assert entry.nodes == (EU1,) and entry.node_regions == ("eu",) and not entry.residency_ok
    assert (
        "declares region eu but its pod gpu-worker-1 on Kubernetes node k-eu-1 is in region us"
        in entry.detail
    )
    assert all(EU1 not in a.nodes for a in store.audit() if a.decision == "place")
    rig.label(EU1, region="eu")  # the label is fixed
    rig.step()
    assert rig.state(EU1) is NodeState.READY
    assert rig.conflicts_gauge() == 0
    assert rig.audit("residency_conflict_cleared") == [(EU1,)]
    assert sorted(rig.node_of(job) or "" for job in eu_jobs) == [EU0, EU1]
    rig.step()
    assert len(rig.audit("residency_conflict")) == 1 and len(rig.audit("residency_conflict_cleared")) == 1


def test_a_failed_step_does_not_lose_the_conflicts_audit(store: Store, kube: KubeCluster) -> None:
    rig = Rig(store, kube)
    rig.step()
    rig.label(EU1, region="us")
    real_apply = store.apply

    def locked(batch: object, fence: object = None) -> None:
        raise RuntimeError("database is locked")

    store.apply = locked  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        rig.step()
    store.apply = real_apply  # type: ignore[method-assign]
    assert rig.audit("residency_conflict") == []
    rig.step(0.1)
    assert rig.audit("residency_conflict") == [(EU1,)]


def test_a_ray_node_without_a_pod_gets_no_job(store: Store, kube: KubeCluster) -> None:
    rig = Rig(store, kube)
    kube.delete_pod("gpu-worker-2")  # us-r1-n00's pod is gone from the listing
    rig.step()
    assert rig.state(US0) is NodeState.DRAINING
    job = rig.submit("us")
    for _ in range(3):
        rig.step()
    assert rig.node_of(job) is None
    assert rig.audit("residency_conflict") == [(US0,)]
    assert rig.conflicts_gauge() == 1
