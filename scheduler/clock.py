"""Clocks: the only place that reads wall time, so the core and the simulator never do."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of 'now' in seconds since the epoch (or since the start of a simulation)."""

    def now(self) -> float: ...


class WallClock:
    """Real time, for the live controller."""

    def now(self) -> float:
        return time.time()


class VirtualClock:
    """Simulated time that only moves when told to; used by the simulator and tests."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance_to(self, t: float) -> None:
        if t < self._now:
            raise ValueError(f"virtual clock cannot go back from {self._now} to {t}")
        self._now = t
