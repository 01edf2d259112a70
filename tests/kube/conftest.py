"""A kmock Kubernetes API (KubernetesEmulator over HTTP) serving real Node and Pod objects to the
official `kubernetes` client, and a Ray-like inner backend whose nodes come from ray.nodes()-shaped
entries through RayBackend's own conversion (node_from_ray, address_from_ray).

No Kubernetes API server can run here; kmock speaks the API's HTTP and JSON, so the client code under
test is the one that talks to a real cluster. The server runs on its own event loop in a thread
(the client is synchronous); objects are changed on that loop, between requests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import kmock
import pytest
from kubernetes import client

from scheduler.backends.base import NodeAddress
from scheduler.backends.ray_nodes import (
    LABEL_GPU_TYPE,
    LABEL_NODE,
    LABEL_NVLINK,
    LABEL_RACK,
    LABEL_REGION,
    address_from_ray,
    node_from_ray,
)
from scheduler.model.cluster import Node
from tests.control.scripted import ScriptedBackend

NAMESPACE = "corral"
NODES = kmock.resource("", "v1", "nodes")
PODS = kmock.resource("", "v1", "pods")


class KubeCluster:
    """The objects kmock serves, changed on its loop; `failing` makes the list calls answer 503."""

    def __init__(self, handler: Any, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.handler = handler
        self.url = url
        self.loop = loop
        self.failing = False
        handler["list", NODES, lambda: self.failing] << 503
        handler["list", PODS, lambda: self.failing] << 503

    def _on_loop(self, fn: Callable[[], None]) -> None:
        done: Future[None] = Future()

        def run() -> None:
            try:
                fn()
                done.set_result(None)
            except BaseException as exc:  # pragma: no cover - a broken test setup
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        done.result(timeout=10)

    def api_client(self) -> client.ApiClient:
        cfg = client.Configuration()
        cfg.host = self.url.rstrip("/")
        return client.ApiClient(cfg)

    def put_node(
        self,
        name: str,
        *,
        region: str | None,
        zone: str | None = None,
        rack: str | None = None,
        gpu_product: str | None = None,
        cordoned: bool = False,
        ready: str = "True",
        rack_label: str = "corral.dev/rack",
    ) -> None:
        labels = {"kubernetes.io/hostname": name}
        for key, value in (
            ("topology.kubernetes.io/region", region),
            ("topology.kubernetes.io/zone", zone),
            (rack_label, rack),
            ("nvidia.com/gpu.product", gpu_product),
        ):
            if value is not None:
                labels[key] = value
        obj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"unschedulable": True} if cordoned else {},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                    {
                        "type": "Ready",
                        "status": ready,
                        "reason": "KubeletReady" if ready == "True" else "NodeStatusUnknown",
                        "message": "kubelet is posting ready status"
                        if ready == "True"
                        else "Kubelet stopped posting node status.",
                    },
                ],
                "capacity": {"nvidia.com/gpu": "8"},
            },
        }
        self._on_loop(lambda: self.handler.objects.__setitem__((NODES, None, name), obj))

    def put_pod(
        self,
        name: str,
        *,
        ip: str,
        node: str,
        phase: str = "Running",
        labels: dict[str, str] | None = None,
        namespace: str = NAMESPACE,
    ) -> None:
        obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"ray.io/is-ray-node": "yes", "ray.io/cluster": "gpu", "ray.io/node-type": "worker"}
                if labels is None
                else labels,
            },
            "spec": {"nodeName": node, "containers": [{"name": "ray-worker", "image": "rayproject/ray"}]},
            "status": {"phase": phase, "podIP": ip, "hostIP": "192.168.0.1"},
        }
        self._on_loop(lambda: self.handler.objects.__setitem__((PODS, namespace, name), obj))

    def delete_pod(self, name: str, namespace: str = NAMESPACE) -> None:
        self._on_loop(lambda: self.handler.objects[PODS, namespace, name].delete())


@pytest.fixture
def kube() -> Iterator[KubeCluster]:
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with kmock.KubernetesEmulator() as handler, kmock.Server(handler) as server:
            stop = asyncio.Event()
            box.update(handler=handler, url=str(server.url), loop=asyncio.get_running_loop(), stop=stop)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), name="kmock", daemon=True)
    thread.start()
    assert ready.wait(10), "kmock did not start"
    yield KubeCluster(box["handler"], box["url"], box["loop"])
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(10)


def ray_info(
    node_id: str,
    *,
    region: str | None,
    ip: str,
    hostname: str = "",
    rack: str = "r1",
    gpu_type: str = "H100",
    nvlink: str | None = None,
    gpus: int = 8,
) -> dict[str, Any]:
    """One entry of ray.nodes() as a KubeRay worker's raylet reports it."""
    labels = {LABEL_NODE: node_id, LABEL_RACK: rack, LABEL_GPU_TYPE: gpu_type}
    if region is not None:
        labels[LABEL_REGION] = region
    if nvlink is not None:
        labels[LABEL_NVLINK] = nvlink
    return {
        "NodeID": node_id.encode().hex().ljust(56, "0"),
        "Alive": True,
        "NodeManagerAddress": ip,
        "NodeManagerHostname": hostname,
        "Resources": {"GPU": float(gpus), "CPU": 2.0, "memory": 16.0 * 2**30},
        "Labels": {**labels, "ray.io/node-id": node_id.encode().hex()},
    }


class RayLikeBackend(ScriptedBackend):
    """A scripted backend whose nodes and addresses come from ray.nodes()-shaped entries."""

    def __init__(self, infos: list[dict[str, Any]]) -> None:
        self.infos = list(infos)
        super().__init__(self._nodes())
        self.health_answer = "ok"

    def _nodes(self) -> list[Node]:
        return [n for info in self.infos if (n := node_from_ray(info)) is not None]

    def nodes(self) -> list[Node]:
        return self._nodes()

    def node_addresses(self) -> dict[str, NodeAddress]:
        out = {}
        for info in self.infos:
            node = node_from_ray(info)
            if node is not None:
                out[node.id] = address_from_ray(info)
        return out

    def health(self) -> str:
        return self.health_answer


class Ticker:
    """A monotonic clock the test moves."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t
