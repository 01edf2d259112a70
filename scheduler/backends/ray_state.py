"""What the Ray cluster's control store (the GCS) says, read with a timeout: the GPUs each node has
free right now (after every placement group's reservation, whoever made it), and whether the GCS
answers at all.

Both go through the GCS client of this process's Ray connection (made by `ray.init`); Ray 2.60 has
no public per-node "available" call with a timeout, so this uses the client Ray itself uses.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

import ray


def _gcs() -> Any:
    return getattr(ray._private.worker.global_worker, "gcs_client")  # noqa: B009 (set by ray.init)


def free_gpus(ray_to_corral: Mapping[str, str], timeout_s: float) -> dict[str, float]:
    """Available GPUs per Corral node id, for the alive nodes in `ray_to_corral` (Ray's hex node
    id → Corral's id). A node whose GPUs are all taken lists no GPU: it counts as 0."""
    reply = _gcs().get_all_resource_usage(timeout=timeout_s)
    free: dict[str, float] = {}
    for usage in reply.resource_usage_data.batch:
        node = ray_to_corral.get(usage.node_id.hex())
        if node is not None:
            free[node] = float(usage.resources_available.get("GPU", 0.0))
    return free


def gcs_health(address: str, timeout_s: float) -> str:
    """ "ok" if the GCS answers one small request within `timeout_s`, else the problem in one line."""
    try:
        _gcs().internal_kv_exists(b"corral-health", b"corral", timeout=timeout_s)
    except Exception as exc:
        return f"Ray GCS at {address} did not answer within {timeout_s:g} s: {one_line(exc)}"
    return "ok"


def gcs_reachable(address: str, timeout_s: float) -> str:
    """ "ok" if the GCS port accepts a connection within `timeout_s` (for a process without its own
    Ray connection, e.g. a follower controller: Ray's GCS client blocks for 40 s on a dead address)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return "ok"
    except (OSError, ValueError) as exc:
        return f"Ray GCS at {address} does not accept connections: {one_line(exc)}"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line: its type and the first line of its text (Ray's are long)."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
