"""Measured GPU metrics: exported exactly for what NVML measured, never invented."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from scheduler.backends.gpu_monitor import has_real_gpus
from scheduler.gpu import GpuSample, read_local_gpus
from scheduler.metrics import GpuCollector


def test_declared_gpus_are_not_real_gpus() -> None:
    simulated = {"Alive": True, "Resources": {"GPU": 8.0, "CPU": 2.0, "node:127.0.0.1": 1.0}}
    real = {"Alive": True, "Resources": {"GPU": 8.0, "accelerator_type:H100": 1.0}}
    assert not has_real_gpus(simulated) and has_real_gpus(real)


def test_only_gpus_that_exist_are_measured() -> None:
    # One sample per NVIDIA device the kernel knows (/dev/nvidia0, ...): none on CI and on this
    # development machine, where NVML cannot start; every one on a real GPU machine.
    devices = [p for p in Path("/dev").glob("nvidia[0-9]*")]
    samples = read_local_gpus()
    assert len(samples) == len(devices)
    assert all(0.0 <= s.utilization_ratio <= 1.0 and s.memory_used_bytes >= 0 for s in samples)


def test_the_collector_exports_exactly_the_measured_gpus() -> None:
    samples = {"n1": [GpuSample(0, 0.75, 40 * 2**30), GpuSample(1, 1.3, 0)]}
    registry = CollectorRegistry()
    registry.register(GpuCollector(lambda: samples))
    assert registry.get_sample_value("corral_gpu_utilization_ratio", {"node": "n1", "gpu": "0"}) == 0.75
    assert (
        registry.get_sample_value("corral_gpu_utilization_ratio", {"node": "n1", "gpu": "1"}) == 1.0
    )  # capped
    assert registry.get_sample_value("corral_gpu_memory_used_bytes", {"node": "n1", "gpu": "0"}) == 40 * 2**30
    empty = CollectorRegistry()
    empty.register(GpuCollector(dict))
    assert not [s for m in empty.collect() for s in m.samples]
