"""How long a job will run, for a forecast: its time limit, else what finished jobs of its queue took.

The learned estimate is a quantile (default the median) of the runtimes of the last `keep` finished
jobs of the job's queue (at least `min_samples` of them; otherwise of every queue together). A
running job without a time limit that has already run `e` seconds is expected to need the same
quantile of the runtimes longer than `e`, minus `e` (a job that has run long is likely a long one);
when no finished job ran that long, as long again as it has run. With no finished job at all, the
runtime is unknown (inf): the job never ends within the forecast, and jobs that wait for its GPUs
get no estimate.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scheduler.model.job import Job
from scheduler.view import finished_runtime

__all__ = ["RuntimeModel", "finished_runtime"]

MIN_RUNTIME_S = 1.0


@dataclass(frozen=True, slots=True)
class RuntimeModel:
    """Runtimes learned from finished jobs (sorted per queue, and all queues together)."""

    by_queue: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    pooled: tuple[float, ...] = ()
    quantile: float = 0.5
    min_samples: int = 3
    use_time_limits: bool = True  # False: learned runtimes first, capped by the time limit

    @classmethod
    def learn(
        cls,
        finished: Iterable[tuple[str, float]],
        *,
        keep: int = 500,
        quantile: float = 0.5,
        min_samples: int = 3,
        use_time_limits: bool = True,
    ) -> RuntimeModel:
        """From (queue, runtime seconds) of finished jobs, newest last; keeps the last `keep` per queue."""
        per_queue: dict[str, list[float]] = {}
        for queue, runtime in finished:
            if runtime > 0 and math.isfinite(runtime):
                per_queue.setdefault(queue, []).append(runtime)
        by_queue = {q: tuple(sorted(r[-keep:])) for q, r in per_queue.items()}
        pooled = tuple(sorted(x for r in by_queue.values() for x in r))
        return cls(by_queue, pooled, quantile, min_samples, use_time_limits)

    def _samples(self, queue: str) -> tuple[float, ...]:
        own = self.by_queue.get(queue, ())
        return own if len(own) >= self.min_samples else self.pooled

    def runtime(self, queue: str) -> float | None:
        """The learned runtime of a job of this queue; None when nothing has finished yet."""
        samples = self._samples(queue)
        return _quantile(samples, self.quantile) if samples else None

    def remaining(self, queue: str, elapsed: float) -> float | None:
        """Seconds a job of this queue that has run `elapsed` seconds still needs (None: unknown)."""
        samples = self._samples(queue)
        if not samples:
            return None
        longer = samples[bisect.bisect_right(samples, elapsed) :]
        if not longer:
            return max(MIN_RUNTIME_S, elapsed)
        return max(MIN_RUNTIME_S, _quantile(longer, self.quantile) - elapsed)

    def pending_runtime(self, job: Job) -> float:
        """The runtime a pending job is replayed with: its time limit, else the learned one (inf if
        unknown). With use_time_limits off: the learned one, capped by the limit."""
        limit = job.spec.time_limit_s
        if limit is not None and self.use_time_limits:
            return limit
        learned = self.runtime(job.spec.queue)
        if learned is None:
            return limit if limit is not None else math.inf
        return learned if limit is None else min(learned, limit)

    def running_remaining(self, job: Job, started_at: float, now: float) -> float:
        """Seconds a running job still holds its GPUs: to its time limit, else the learned remainder."""
        elapsed = max(0.0, now - started_at)
        limit = job.spec.time_limit_s
        to_limit = None if limit is None else max(0.0, limit - elapsed)
        if to_limit is not None and self.use_time_limits:
            return to_limit
        learned = self.remaining(job.spec.queue, elapsed)
        if learned is None:
            return to_limit if to_limit is not None else math.inf
        return learned if to_limit is None else min(learned, to_limit)


def _quantile(sorted_values: tuple[float, ...], q: float) -> float:
    """The q-quantile (nearest rank) of sorted values."""
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]
