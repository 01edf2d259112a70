"""GPU measurements through NVML (nvidia-ml-py): what one node's agent reads. No Ray here, so the
exporter and the simulator can use the type without importing Ray."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuSample:
    gpu: int  # NVML index on its node
    utilization_ratio: float  # 0–1, NVML's "percent of time a kernel was running"
    memory_used_bytes: int


def read_local_gpus() -> list[GpuSample]:
    """This machine's GPUs through NVML; [] where there is no NVIDIA driver or no GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library, no driver, no device: nothing measured
        return []
    try:
        samples = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            samples.append(GpuSample(index, min(1.0, max(0.0, rates.gpu / 100.0)), int(memory.used)))
        return samples
    finally:
        pynvml.nvmlShutdown()
