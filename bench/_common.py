"""Helpers shared by the bench scripts (timing, fits, output)."""

from __future__ import annotations

import gc
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]

T = TypeVar("T")


# What `timed` reads: wall time by default; a script's `--cpu` switches to this process's CPU
# time, which on a shared machine leaves out the waits for a core (not the slowdown a busy
# neighbour causes through shared caches).
_clock: Callable[[], float] = time.perf_counter


def use_cpu_time() -> None:
    global _clock
    _clock = time.process_time


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """(seconds, result) of one call, after a collection so that earlier garbage is not billed to it."""
    gc.collect()
    start = _clock()
    result = fn()
    return _clock() - start, result


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def loglog_slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of log(y) against log(x): the growth exponent k in y ∝ x^k."""
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(max(y, 1e-12)) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def nlogn_slope(sizes: Sequence[float]) -> float:
    """The log-log slope n·log n itself has over these sizes (a bit above 1)."""
    return loglog_slope([(n, n * math.log(n)) for n in sizes])


def growth_verdict(exponent: float, reference: float) -> str:
    if exponent <= reference + 0.15:
        return f"OK: grows no faster than n log n (exponent {exponent:.2f} vs {reference:.2f})"
    if exponent < 1.7:
        return f"WARN: faster than n log n, below quadratic (exponent {exponent:.2f} vs {reference:.2f})"
    return f"FAIL: about quadratic or worse (exponent {exponent:.2f})"


def fmt_s(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def emit_json(data: dict[str, Any]) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
