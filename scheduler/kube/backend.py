"""TopologyBackend: a Backend (RayBackend) seen through the Kubernetes topology.

Every call is delegated to the inner backend; `nodes()` applies what Kubernetes says of the machine
under each Ray node (scheduler/kube/topology.py):

- a cordoned Kubernetes node (`kubectl cordon` / `drain`) → the Ray node is DRAINING: it keeps its
  running jobs and takes no new one; a NotReady one → DOWN. A node the inner backend already reports
  DRAINING or DOWN stays at least that.
- zone and rack: the Kubernetes labels are the truth where they are set (the rack is named within its
  region, `<region>/<rack label value>`, as node_from_ray does; the NVLink domain follows its rack).
- GPU product (`nvidia.com/gpu.product`) is added to the node's labels and checked against the
  declared `corral.dev/gpu-type` (each of its words must appear in the product name): a mismatch is
  logged and listed by `gpu_mismatches()`, and the node stays in (a naming difference is not a
  safety problem; GPU types are what queues' quotas are written in).
- data residency: the node's declared region (Ray label `corral.dev/region`) must equal its
  Kubernetes node's `topology.kubernetes.io/region`. When it does not, or cannot be checked — the Ray
  node declares no region, no Ray pod matches it, its Kubernetes node is gone or has no region label
  — the node is taken out of scheduling (DRAINING) and listed by `conflicts()` (node id → one line);
  the controller audits and exports it (`corral_residency_label_conflicts`). DRAINING, not DOWN:
  which of the two labels is wrong is unknown, the jobs running there passed the residency check
  with the declared region when they were placed (and that check is in the audit log), and stopping
  them on what is most often a labelling mistake would throw their work away; the alert is critical
  and an admin decides (fix the label, or stop the jobs). Nothing new is placed there either way.
  A Ray node that joined less than `join_grace_s` ago and is not found yet (its pod not in the last
  listing) is out of scheduling too, but reported only after the grace (a refresh is asked at once).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from scheduler.backends.base import AddressedBackend, BackendEvent, NodeAddress
from scheduler.backends.ray_nodes import LABEL_GPU_TYPE, LABEL_NVLINK, LABEL_REGION
from scheduler.kube.topology import GPU_PRODUCT_LABEL, KubernetesTopology, Location
from scheduler.model.cluster import Node, NodeState
from scheduler.model.job import Job
from scheduler.model.plan import Allocation

log = logging.getLogger(__name__)

LABEL_KUBE_NODE = "corral.dev/kubernetes-node"
# Why Kubernetes takes the node out of scheduling, as a short token for `corral nodes`:
# cordoned | not-ready | region-conflict | unlocated (and absent when it does not).
LABEL_KUBE_STATE = "corral.dev/kubernetes-state"

_SEVERITY = {NodeState.READY: 0, NodeState.DRAINING: 1, NodeState.DOWN: 2}


class TopologyBackend:
    """`inner` with the Kubernetes view applied to its nodes (see the module's docstring)."""

    def __init__(
        self,
        inner: AddressedBackend,
        topology: KubernetesTopology,
        *,
        join_grace_s: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.topology = topology
        self.join_grace_s = 2 * topology.refresh_s + 1 if join_grace_s is None else join_grace_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._first_seen: dict[str, float] = {}
        self._conflicts: dict[str, str] = {}
        self._gpu_mismatches: dict[str, str] = {}
        self._evaluated = False

    # --- Backend protocol -----------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        """The inner backend's nodes, as Kubernetes says they are (module docstring)."""
        view = self.topology.view()
        addresses = self.inner.node_addresses()
        inner_nodes = list(self.inner.nodes())
        now = self._monotonic()
        out: list[Node] = []
        conflicts: dict[str, str] = {}
        mismatches: dict[str, str] = {}
        unseen = False
        with self._lock:
            for node in inner_nodes:
                self._first_seen.setdefault(node.id, now)
            for gone in set(self._first_seen) - {n.id for n in inner_nodes}:
                del self._first_seen[gone]
            first_seen = dict(self._first_seen)
        for node in inner_nodes:
            where = view.locate(addresses.get(node.id))
            young = now - first_seen[node.id] < self.join_grace_s
            applied, conflict, mismatch = _apply(node, where)
            if conflict and not where.pod:
                unseen = True
                if young and view.read_at is not None:
                    conflict = ""  # its pod not listed yet: out of scheduling, reported after the grace
            if conflict:
                conflicts[node.id] = conflict
            if mismatch:
                mismatches[node.id] = mismatch
            out.append(applied)
        if unseen:
            self.topology.request_refresh()
        with self._lock:
            new_mismatches = {n: m for n, m in mismatches.items() if self._gpu_mismatches.get(n) != m}
            self._conflicts = conflicts
            self._gpu_mismatches = mismatches
            self._evaluated = True
        for node_id, why in sorted(new_mismatches.items()):
            log.warning("GPU type of node %s: %s (the node stays in scheduling)", node_id, why)
        return out

    def start(self, job: Job, allocation: Allocation) -> None:
        self.inner.start(job, allocation)

    def stop(self, job: Job, grace_s: float) -> None:
        self.inner.stop(job, grace_s)

    def poll(self) -> list[BackendEvent]:
        return self.inner.poll()

    # --- what Kubernetes says -------------------------------------------------------------------
    def conflicts(self) -> dict[str, str]:
        """Node id → why its data residency cannot be trusted (one line), for the nodes that
        `nodes()` last took out of scheduling for it (evaluated now if it never ran)."""
        with self._lock:
            evaluated = self._evaluated
        if not evaluated:
            self.nodes()
        with self._lock:
            return dict(self._conflicts)

    def gpu_mismatches(self) -> dict[str, str]:
        """Node id → how its declared GPU type disagrees with `nvidia.com/gpu.product`."""
        with self._lock:
            return dict(self._gpu_mismatches)

    def health(self) -> str:
        """The inner backend's health and the Kubernetes topology's, "ok" when both are."""
        inner_health = getattr(self.inner, "health", None)
        parts = [str(inner_health()) if callable(inner_health) else "ok", self.topology.health()]
        bad = [p for p in parts if p != "ok"]
        return "; ".join(bad) if bad else "ok"

    # --- the rest of the inner backend (LiveBackend, RayBackend's extras) --------------------------
    def node_addresses(self) -> Mapping[str, NodeAddress]:
        return self.inner.node_addresses()

    def attempt_pairs(self) -> Any:
        return self.inner.attempt_pairs()  # type: ignore[attr-defined]

    def adopt(self, job: Job, allocation: Allocation) -> None:
        self.inner.adopt(job, allocation)  # type: ignore[attr-defined]

    def remove(self, job_id: str, attempt: int) -> None:
        self.inner.remove(job_id, attempt)  # type: ignore[attr-defined]

    def release(self, job_id: str, attempt: int) -> None:
        self.inner.release(job_id, attempt)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.topology.close()
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()

    @property
    def on_event(self) -> Callable[[], None] | None:
        return getattr(self.inner, "on_event", None)

    @on_event.setter
    def on_event(self, callback: Callable[[], None] | None) -> None:
        self.inner.on_event = callback  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        # available_gpus, log_path, checkpoint_dir, work_dir, ...: whatever the inner backend has.
        if name in ("inner", "topology") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def _apply(node: Node, where: Location) -> tuple[Node, str, str]:
    """The node as Kubernetes says it is; why its residency is in conflict ("" if it is not); how
    its GPU type disagrees ("" if it does not)."""
    labels = dict(node.labels)
    if not where.found:
        labels[LABEL_KUBE_STATE] = "unlocated"
        why = f"cannot locate it in Kubernetes: {where.problem}"
        return _worst(node, NodeState.DRAINING, labels), why, ""
    labels[LABEL_KUBE_NODE] = where.kube_node
    if where.gpu_product:
        labels[GPU_PRODUCT_LABEL] = where.gpu_product
    update: dict[str, Any] = {}
    if where.zone:
        update["zone"] = where.zone
    if where.rack:
        rack = f"{node.region}/{where.rack}"
        update["rack"] = rack
        nvlink = node.labels.get(LABEL_NVLINK)
        update["nvlink_domain"] = f"{rack}/{nvlink}" if nvlink else ""
    conflict = _residency_conflict(node, where)
    mismatch = _gpu_mismatch(node, where)
    state = NodeState.READY
    if conflict:
        labels[LABEL_KUBE_STATE] = "region-conflict"
        state = NodeState.DRAINING
    elif where.cordoned:
        labels[LABEL_KUBE_STATE] = "cordoned"
        state = NodeState.DRAINING
    if not where.ready:
        labels[LABEL_KUBE_STATE] = "not-ready"
        state = NodeState.DOWN
    return _worst(node.model_copy(update=update), state, labels), conflict, mismatch


def _residency_conflict(node: Node, where: Location) -> str:
    declared = node.labels.get(LABEL_REGION, "")
    pod = f"pod {where.pod} on Kubernetes node {where.kube_node}"
    if not declared:
        return f"declares no {LABEL_REGION} label ({pod} is in region {where.region or '?'})"
    if not where.region:
        return f"declares region {declared}; {pod} has no topology.kubernetes.io/region label"
    if where.region != declared:
        return f"declares region {declared} but its {pod} is in region {where.region}"
    return ""


def _gpu_mismatch(node: Node, where: Location) -> str:
    declared = node.labels.get(LABEL_GPU_TYPE, "")
    if not declared or not where.gpu_product:
        return ""
    product = re.sub(r"[^a-z0-9]", "", where.gpu_product.lower())
    words = [w for w in re.split(r"[^a-z0-9]+", declared.lower()) if w]
    if all(w in product for w in words):
        return ""
    return f"declared {declared}, but Kubernetes node {where.kube_node} has {where.gpu_product}"


def _worst(node: Node, state: NodeState, labels: dict[str, str]) -> Node:
    worst = state if _SEVERITY[state] > _SEVERITY[node.state] else node.state
    return node.model_copy(update={"state": worst, "labels": labels})
