"""One call for `corral serve` to put the Kubernetes topology in front of its backend.

    backend = with_kubernetes_topology(RayBackend(...), namespace=None, rack_label="corral.dev/rack")

In a pod: the in-cluster service account (`kubernetes.config.load_incluster_config()`) and, without
a namespace, the pod's own namespace. The service account needs `list` on `pods` in that namespace
and `list` on `nodes` (cluster-scoped: a ClusterRole).
"""

from __future__ import annotations

import logging
from pathlib import Path

from kubernetes import client, config

from scheduler.backends.base import AddressedBackend
from scheduler.kube.backend import TopologyBackend
from scheduler.kube.topology import DEFAULT_POD_SELECTOR, DEFAULT_RACK_LABEL, KubernetesTopology

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def own_namespace(path: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """The namespace this pod runs in (from its service account), or an error saying so."""
    try:
        namespace = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise RuntimeError(
            f"cannot read the pod's namespace from {path} ({exc.strerror}): not running in a "
            "Kubernetes pod? Pass --kubernetes-namespace"
        ) from exc
    if not namespace:
        raise RuntimeError(f"{path} is empty: pass --kubernetes-namespace")
    return namespace


def with_kubernetes_topology(
    backend: AddressedBackend,
    *,
    namespace: str | None = None,
    rack_label: str = DEFAULT_RACK_LABEL,
    refresh_s: float = 5.0,
    pod_selector: str = DEFAULT_POD_SELECTOR,
    api_client: client.ApiClient | None = None,
    background: bool = True,
) -> TopologyBackend:
    """`backend` seen through the Kubernetes topology (scheduler/kube/backend.py). The first
    reading is done here, so the first scheduling cycle already has a view (if it fails, every node
    stays out of scheduling until a refresh succeeds; `health()` says why). `api_client` defaults to
    the in-cluster configuration; `background` refreshes in a daemon thread."""
    if api_client is None:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        api_client = client.ApiClient()
    topology = KubernetesTopology(
        api_client,
        namespace or own_namespace(),
        rack_label=rack_label,
        pod_selector=pod_selector,
        refresh_s=refresh_s,
    )
    if not topology.refresh():
        log.error(
            "no Kubernetes topology at start-up: %s (no node is scheduled until it is read)",
            topology.last_error,
        )
    if background:
        topology.start()
    log.info(
        "Kubernetes topology: namespace %s, pods %s, rack label %s, refresh every %.0f s",
        topology.namespace,
        pod_selector,
        rack_label,
        refresh_s,
    )
    return TopologyBackend(backend, topology)
