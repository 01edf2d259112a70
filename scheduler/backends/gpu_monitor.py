"""Measured GPU utilisation and memory, read through NVML by a small agent on each real-GPU node.

Only nodes where Ray itself detected NVIDIA GPUs (it then adds an `accelerator_type:<model>`
resource) get an agent; simulated nodes with declared, logical GPUs get none, so nothing is ever
invented: no measurement, no series. The agents are plain (non-detached) actors owned by the
controller's process, so they go away with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import ray

from scheduler.gpu import GpuSample, read_local_gpus

log = logging.getLogger("corral.gpu")

SAMPLE_EVERY_S = 5.0


class _Agent:
    def sample(self) -> list[GpuSample]:
        return read_local_gpus()


def has_real_gpus(info: Mapping[str, Any]) -> bool:
    """Ray found NVIDIA hardware on this node (not just GPUs declared with --num-gpus)."""
    return any(str(key).startswith("accelerator_type:") for key in info.get("Resources", {}))


class GpuMonitor:
    """Keeps one agent per real-GPU node and the latest samples, {node id: [GpuSample]}."""

    def __init__(self, node_label: str, every_s: float = SAMPLE_EVERY_S) -> None:
        self._label = node_label
        self._every_s = every_s
        self._agents: dict[str, Any] = {}
        self._samples: dict[str, list[GpuSample]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="corral-gpu-monitor", daemon=True)
        self._thread.start()

    def samples(self) -> dict[str, list[GpuSample]]:
        with self._lock:
            return dict(self._samples)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sample_once()
            except Exception:  # a Ray hiccup must not end monitoring
                log.warning("GPU sampling failed", exc_info=True)
            self._stop.wait(self._every_s)

    def _sample_once(self) -> None:
        if not ray.is_initialized():  # a follower controller has no Ray connection
            self._agents.clear()  # those of an earlier connection died with it
            with self._lock:
                self._samples = {}
            return
        alive: dict[str, Mapping[str, Any]] = {}
        for info in ray.nodes():  # type: ignore[no-untyped-call]
            labels = info.get("Labels") or {}
            if info.get("Alive") and has_real_gpus(info):
                alive[str(labels.get(self._label) or info["NodeID"])] = info
        for node_id, info in alive.items():
            if node_id not in self._agents:
                self._agents[node_id] = (
                    ray.remote(_Agent)
                    .options(num_cpus=0, label_selector={"ray.io/node-id": str(info["NodeID"])})
                    .remote()
                )
        measured: dict[str, list[GpuSample]] = {}
        for node_id in list(self._agents):
            if node_id not in alive:
                del self._agents[node_id]  # the node left: so do its series
                continue
            try:
                measured[node_id] = ray.get(self._agents[node_id].sample.remote(), timeout=self._every_s)
            except Exception:
                log.warning("no GPU sample from node %s", node_id, exc_info=True)
        with self._lock:
            self._samples = measured
