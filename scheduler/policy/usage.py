"""Decayed usage for fair share: GPU-seconds whose weight halves every half-life (as Slurm's)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class DecayedUsage:
    """Integral of (GPUs held × time) with exponential decay, advanced in closed form between changes."""

    half_life_s: float
    value: float = 0.0  # decayed GPU-seconds at `at`
    at: float = 0.0
    gpus: int = 0  # GPUs held since `at`

    def value_at(self, now: float) -> float:
        dt = max(0.0, now - self.at)
        if dt == 0.0:
            return self.value
        lam = math.log(2) / self.half_life_s
        decay = math.exp(-lam * dt)
        return self.value * decay + self.gpus * (1.0 - decay) / lam

    def change(self, now: float, delta_gpus: int) -> None:
        """Record that the GPUs held changed by `delta_gpus` at `now`."""
        self.value = self.value_at(now)
        self.at = max(self.at, now)
        self.gpus += delta_gpus
