"""Corral's nodes in a Ray cluster: the Ray node labels that carry a node's identity and topology,
and the Corral Node read back from Ray's node table."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from scheduler.backends.base import NodeAddress
from scheduler.model.cluster import Node

log = logging.getLogger(__name__)

# Ray node labels (Kubernetes label syntax, as Ray 2.60 validates them; "ray.io/" is Ray's own).
LABEL_NODE = "corral.dev/node"
LABEL_REGION = "corral.dev/region"
LABEL_ZONE = "corral.dev/zone"
LABEL_RACK = "corral.dev/rack"
LABEL_GPU_TYPE = "corral.dev/gpu-type"
LABEL_NVLINK = "corral.dev/nvlink-domain"
RAY_NODE_ID_LABEL = "ray.io/node-id"

# Head system config that makes Ray declare a hard-killed node dead in ~1.2 s instead of ~14 s.
FAST_HEALTH_CHECK: dict[str, int] = {
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
    "health_check_timeout_ms": 500,
}


def node_from_ray(info: dict[str, Any]) -> Node | None:
    """A Corral Node from one entry of ray.nodes(), or None for dead and GPU-less nodes."""
    gpus = int(info.get("Resources", {}).get("GPU", 0))
    if not info.get("Alive") or gpus <= 0:
        return None
    labels: dict[str, str] = dict(info.get("Labels") or {})
    node_id = labels.get(LABEL_NODE) or str(info["NodeID"])
    resources = info.get("Resources", {})
    region = labels.get(LABEL_REGION) or "default"
    # Label values cannot hold "/": labels name a rack within its region and an NVLink domain within
    # its rack, and Corral's ids are paths (region/rack/domain) as in the cluster file.
    rack_label = labels.get(LABEL_RACK)
    rack = f"{region}/{rack_label}" if rack_label else node_id
    nvlink = labels.get(LABEL_NVLINK, "")
    try:
        return Node(
            id=node_id,
            region=region,
            zone=labels.get(LABEL_ZONE, ""),
            rack=rack,
            nvlink_domain=f"{rack}/{nvlink}" if nvlink else "",
            gpu_type=labels.get(LABEL_GPU_TYPE) or "gpu",
            gpus=gpus,
            cpus=max(1, int(resources.get("CPU", 1))),
            memory_gb=max(1, int(resources.get("memory", 0) // 2**30)),
            labels={k: v for k, v in labels.items() if not k.startswith("ray.io/")},
        )
    except ValidationError:
        log.warning("ignoring Ray node %s: not a valid Corral node", node_id, exc_info=True)
        return None


def address_from_ray(info: dict[str, Any]) -> NodeAddress:
    """Where the Ray node of one entry of ray.nodes() runs: its raylet's IP and host name."""
    return NodeAddress(
        ip=str(info.get("NodeManagerAddress") or ""), hostname=str(info.get("NodeManagerHostname") or "")
    )
