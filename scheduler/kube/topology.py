"""Where each Ray node runs in Kubernetes, read from the Kubernetes API with the official client.

In KubeRay a Ray node is a pod: the pod's IP is the Ray node's raylet address (NodeManagerAddress)
and the pod's host name is, by default, the pod's name. `KubernetesTopology` lists the Ray pods of
one namespace (label selector `ray.io/is-ray-node=yes`, KubeRay's) and the cluster's Kubernetes
nodes, and answers for a Ray node's address: its pod, its Kubernetes node, that node's region
(`topology.kubernetes.io/region`), zone (`topology.kubernetes.io/zone`), rack (a configurable
label, default `corral.dev/rack`: Kubernetes has no well-known rack label) and GPU product
(`nvidia.com/gpu.product`, from NVIDIA's GPU feature discovery), whether it is cordoned
(`spec.unschedulable`) and whether its `Ready` condition is True.

Two list calls per refresh (every `refresh_s`, 5 s by default), never one per scheduling cycle: a
background thread (`start()`) keeps the view fresh, or, without it, `view()` refreshes when the view
is due. A failed refresh keeps the last good view and is reported by `health()` once the view is
older than `stale_s`; before any refresh succeeded there is no view, and every Ray node is
unlocated (out of scheduling: data residency is never guessed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kubernetes import client

from scheduler.backends.base import NodeAddress

log = logging.getLogger(__name__)

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
DEFAULT_RACK_LABEL = "corral.dev/rack"  # the Ray label's key; e.g. cloud.google.com/gce-topology-block
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
DEFAULT_POD_SELECTOR = "ray.io/is-ray-node=yes"  # KubeRay labels every Ray head and worker pod so
# Pod IPs are reused: a pod that ended may still carry the IP a new pod has now.
_ENDED_PHASES = frozenset({"Succeeded", "Failed"})
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class KubeNode:
    """What Corral reads of one Kubernetes node."""

    name: str
    labels: Mapping[str, str]
    cordoned: bool  # spec.unschedulable (kubectl cordon / drain)
    ready: bool  # the Ready condition is "True"
    not_ready: str = ""  # why not, in words: "Ready=Unknown (NodeStatusUnknown): Kubelet stopped posting"


@dataclass(frozen=True, slots=True)
class RayPod:
    name: str
    ip: str
    node_name: str  # spec.nodeName: the Kubernetes node it runs on ("" while unscheduled)


@dataclass(frozen=True, slots=True)
class Location:
    """Where one Ray node runs. `problem` says why it could not be located ("" when it was);
    label values are "" where the Kubernetes node has no such label."""

    problem: str = ""
    pod: str = ""
    kube_node: str = ""
    region: str = ""
    zone: str = ""
    rack: str = ""
    gpu_product: str = ""
    cordoned: bool = False
    ready: bool = False
    not_ready: str = ""

    @property
    def found(self) -> bool:
        return not self.problem


@dataclass(frozen=True, slots=True)
class TopologyView:
    """One consistent reading of the pods and nodes (immutable)."""

    namespace: str
    rack_label: str
    pods_by_ip: Mapping[str, RayPod] = field(default_factory=dict)
    pods_by_name: Mapping[str, RayPod] = field(default_factory=dict)
    nodes: Mapping[str, KubeNode] = field(default_factory=dict)
    read_at: float | None = None  # monotonic time of the reading; None: never read

    def locate(self, address: NodeAddress | None) -> Location:
        """The Ray node at `address`: its pod by pod IP first, then by host name = pod name."""
        if self.read_at is None:
            return Location(problem="no view of the Kubernetes API yet")
        if address is None or not (address.ip or address.hostname):
            return Location(problem="the Ray node's address is unknown")
        pod = self.pods_by_ip.get(address.ip) if address.ip else None
        if pod is None and address.hostname:
            pod = self.pods_by_name.get(address.hostname) or self.pods_by_name.get(
                address.hostname.split(".", 1)[0]  # a FQDN host name: pod.subdomain.namespace.svc...
            )
        if pod is None:
            return Location(
                problem=f"no Ray pod in namespace {self.namespace} has IP {address.ip or '?'} "
                f"or name {address.hostname or '?'}"
            )
        if not pod.node_name:
            return Location(problem=f"pod {pod.name} is not scheduled on a Kubernetes node", pod=pod.name)
        node = self.nodes.get(pod.node_name)
        if node is None:
            return Location(
                problem=f"pod {pod.name} runs on Kubernetes node {pod.node_name}, which does not exist",
                pod=pod.name,
                kube_node=pod.node_name,
            )
        labels = node.labels
        return Location(
            pod=pod.name,
            kube_node=node.name,
            region=labels.get(REGION_LABEL, ""),
            zone=labels.get(ZONE_LABEL, ""),
            rack=labels.get(self.rack_label, ""),
            gpu_product=labels.get(GPU_PRODUCT_LABEL, ""),
            cordoned=node.cordoned,
            ready=node.ready,
            not_ready=node.not_ready,
        )


class KubernetesTopology:
    """The Kubernetes view of the Ray cluster's machines, cached (see the module's docstring)."""

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        *,
        rack_label: str = DEFAULT_RACK_LABEL,
        pod_selector: str = DEFAULT_POD_SELECTOR,
        refresh_s: float = 5.0,
        min_refresh_s: float = 1.0,
        stale_s: float = 30.0,
        request_timeout_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`api_client`: `kubernetes.config.load_incluster_config()` then `client.ApiClient()` in a
        pod (see scheduler/kube/wiring.py), any ApiClient in tests. `pod_selector` is an equality
        selector (`key=value[,key=value]`, e.g. adding `ray.io/cluster=NAME`); `min_refresh_s`
        bounds refreshes asked early (`request_refresh()`, for a Ray node not found yet)."""
        if not namespace:
            raise ValueError("a namespace is required: the Ray pods are listed in one namespace")
        if refresh_s <= 0 or min_refresh_s < 0 or stale_s <= 0:
            raise ValueError("refresh_s and stale_s must be positive, min_refresh_s not negative")
        self._api = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.rack_label = rack_label
        self.pod_selector = pod_selector
        self._selector = _parse_selector(pod_selector)
        self.refresh_s = refresh_s
        self.min_refresh_s = min_refresh_s
        self.stale_s = stale_s
        self._timeout = request_timeout_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._view = TopologyView(namespace, rack_label)
        self._last_try: float | None = None
        self._error = ""  # the last refresh's failure, "" after a success
        self._failures = 0
        self._early = threading.Event()  # a refresh was asked before it is due
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    # --- reading --------------------------------------------------------------------------------
    def view(self) -> TopologyView:
        """The latest view; without the background thread, refreshed here first when due."""
        if self._thread is None and self._due():
            self.refresh()
        with self._lock:
            return self._view

    def request_refresh(self) -> None:
        """Refresh soon (within `min_refresh_s`), not at the next period: a Ray node was not found."""
        self._early.set()

    def refresh(self) -> bool:
        """List the Ray pods and the Kubernetes nodes now (two API calls); on failure keep the last
        view and remember the error. True if it succeeded."""
        now = self._monotonic()
        with self._lock:
            self._last_try = now
        self._early.clear()
        try:
            pods = self._list_pods()
            nodes = self._list_nodes()
        except Exception as exc:
            error = _one_line(exc)
            with self._lock:
                self._error = error
                self._failures += 1
                failures = self._failures
            log.warning(
                "cannot read the Kubernetes topology (keeping the last view; %d failures in a row): %s",
                failures,
                error,
            )
            return False
        by_ip: dict[str, RayPod] = {}
        for pod in sorted(pods, key=lambda p: p.name):
            if pod.ip:
                by_ip.setdefault(pod.ip, pod)
        view = TopologyView(
            self.namespace,
            self.rack_label,
            pods_by_ip=MappingProxyType(by_ip),
            pods_by_name=MappingProxyType({p.name: p for p in pods}),
            nodes=MappingProxyType({n.name: n for n in nodes}),
            read_at=now,
        )
        with self._lock:
            if self._failures:
                log.info("the Kubernetes topology is readable again after %d failures", self._failures)
            self._view = view
            self._error = ""
            self._failures = 0
        return True

    def health(self) -> str:
        """ "ok", or what is wrong in one line: no view yet, or a view older than `stale_s` because
        refreshes fail (a single failed refresh is only logged: the last view is kept)."""
        with self._lock:
            view, error = self._view, self._error
        if view.read_at is None:
            return f"no Kubernetes topology yet: {error or 'not read yet'}"
        age = self._monotonic() - view.read_at
        if error and age >= self.stale_s:
            return f"Kubernetes topology {age:.0f} s old (refresh failing: {error})"
        return "ok"

    @property
    def last_error(self) -> str:
        with self._lock:
            return self._error

    # --- background refresh -----------------------------------------------------------------------
    def start(self) -> None:
        """Refresh in a daemon thread from now on (view() then never waits on the API)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="corral-kube-topology", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        self._early.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout + 1)

    def _loop(self) -> None:
        while not self._closing.is_set():
            if self._due():
                try:
                    self.refresh()
                except Exception:  # never let the refresher die
                    log.exception("Kubernetes topology refresh failed")
            if self._early.is_set():  # asked early: wait out the minimum interval (close() wakes it)
                self._closing.wait(max(0.05, self._until(self.min_refresh_s)))
            else:  # the period, or until a refresh is asked
                self._early.wait(max(0.05, self._until(self.refresh_s)))

    def _until(self, period: float) -> float:
        with self._lock:
            last = self._last_try
        return 0.0 if last is None else last + period - self._monotonic()

    def _due(self) -> bool:
        left = self._until(self.min_refresh_s if self._early.is_set() else self.refresh_s)
        return left <= 0

    # --- the API ----------------------------------------------------------------------------------
    def _list_pods(self) -> list[RayPod]:
        result = self._api.list_namespaced_pod(
            self.namespace,
            label_selector=self.pod_selector or None,
            _request_timeout=self._timeout,
        )
        pods: list[RayPod] = []
        for item in result.items or ():
            meta, spec, status = item.metadata, item.spec, item.status
            labels: Mapping[str, str] = (meta.labels if meta is not None else None) or _EMPTY
            # The server applies the selector; checked again here so that a server (or mock) that
            # ignores it cannot map a Ray node to some other pod that reused its IP.
            if meta is None or not meta.name or not _matches(self._selector, labels):
                continue
            if status is not None and status.phase in _ENDED_PHASES:
                continue
            pods.append(
                RayPod(
                    name=str(meta.name),
                    ip=str((status.pod_ip if status is not None else None) or ""),
                    node_name=str((spec.node_name if spec is not None else None) or ""),
                )
            )
        return pods

    def _list_nodes(self) -> list[KubeNode]:
        result = self._api.list_node(_request_timeout=self._timeout)
        return [_kube_node(item) for item in result.items or () if item.metadata and item.metadata.name]


def _kube_node(item: Any) -> KubeNode:
    ready, not_ready = False, "no Ready condition"
    for cond in (item.status.conditions if item.status is not None else None) or ():
        if cond.type == "Ready":
            ready = cond.status == "True"
            why = f"({cond.reason or 'no reason'}): {cond.message or ''}"
            not_ready = "" if ready else f"Ready={cond.status} {why}"
            break
    return KubeNode(
        name=str(item.metadata.name),
        labels=MappingProxyType(dict(item.metadata.labels or {})),
        cordoned=bool(item.spec is not None and item.spec.unschedulable),
        ready=ready,
        not_ready=not_ready.rstrip(": "),
    )


def _parse_selector(selector: str) -> dict[str, str | None]:
    """`key=value,key2=value2,key3` → {key: value, key2: value2, key3: None (must exist)}."""
    wanted: dict[str, str | None] = {}
    for part in filter(None, (p.strip() for p in selector.split(","))):
        if "!=" in part or any(op in part for op in (" in ", " notin ", "(")) or part.startswith("!"):
            raise ValueError(f"pod selector {selector!r}: only key=value and key terms are supported")
        key, sep, value = part.partition("==" if "==" in part else "=")
        wanted[key.strip()] = value.strip() if sep else None
    return wanted


def _matches(wanted: Mapping[str, str | None], labels: Mapping[str, str]) -> bool:
    return all(k in labels and (v is None or labels[k] == v) for k, v in wanted.items())


def _one_line(exc: BaseException, limit: int = 200) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    text = f"HTTP {status} {reason}" if status and reason else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
