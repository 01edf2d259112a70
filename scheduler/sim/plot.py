"""One PNG comparing simulation runs: JCT CDF, allocated GPUs and pending jobs over time.

Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch, no screen).
Long series are downsampled so that a 100,000-job run plots in well under a few seconds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from scheduler.sim.records import RunResult

MAX_TIMELINE_POINTS = 5_000  # per series, after downsampling
MAX_CDF_POINTS = 2_000
MIN_JCT_PLOTTED_S = 1.0  # log axis: shorter JCTs are drawn at 1 s

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def downsample_indices(values: FloatArray, max_points: int = MAX_TIMELINE_POINTS) -> IntArray:
    """Indices (sorted, unique) of at most about `max_points` samples that keep a series' shape.

    The series is cut into buckets of consecutive points; from each bucket its first point and the
    points of its minimum and maximum are kept, plus the very last point. Spikes and dips therefore
    survive, unlike plain striding. A series with no more than `max_points` points is kept whole.
    """
    n = int(values.size)
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    buckets = max(max_points // 3, 1)
    size = -(-n // buckets)  # ceil
    padded = np.pad(values, (0, buckets * size - n), mode="edge").reshape(buckets, size)
    offsets = np.arange(buckets, dtype=np.int64) * size
    keep = np.concatenate(
        [
            offsets,
            offsets + np.argmin(padded, axis=1),
            offsets + np.argmax(padded, axis=1),
            np.array([n - 1], dtype=np.int64),
        ]
    )
    return np.unique(np.minimum(keep, n - 1))


def _cdf(jct: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(x, y) of the empirical CDF, at most MAX_CDF_POINTS points taken at evenly spaced ranks."""
    x = np.sort(np.maximum(jct, MIN_JCT_PLOTTED_S))
    n = x.size
    y = np.arange(1, n + 1, dtype=np.float64) / n
    if n > MAX_CDF_POINTS:
        idx = np.unique(np.linspace(0, n - 1, MAX_CDF_POINTS).round().astype(np.int64))
        x, y = x[idx], y[idx]
    return x, y


def _timeline(result: RunResult) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(hours, allocated GPUs, pending jobs) of a run's timeline, sorted by time."""
    points = result.timeline
    n = len(points)
    t = np.fromiter((p.time for p in points), dtype=np.float64, count=n)
    alloc = np.fromiter((p.allocated_gpus for p in points), dtype=np.float64, count=n)
    pending = np.fromiter((p.pending_jobs for p in points), dtype=np.float64, count=n)
    order = np.argsort(t, kind="stable")
    return t[order] / 3600.0, alloc[order], pending[order]


def plot_runs(results: Sequence[RunResult], path: str | os.PathLike[str]) -> None:
    """Write one PNG with three panels comparing `results` (one colour per policy) to `path`."""
    fig = Figure(figsize=(18, 5.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax_cdf, ax_alloc, ax_pending = fig.subplots(1, 3)
    total_gpus = max((r.total_gpus for r in results), default=0)
    jobs = max((len(r.records) for r in results), default=0)
    fig.suptitle(
        f"Corral simulation: {len(results)} {'policy' if len(results) == 1 else 'policies'}, "
        f"{total_gpus:,} GPUs, {jobs:,} jobs",
        fontsize=13,
    )

    for i, result in enumerate(results):
        color = f"C{i % 10}"
        label = result.policy
        if result.records:
            jct = np.fromiter((r.jct for r in result.records), dtype=np.float64, count=len(result.records))
            x, y = _cdf(jct)
            ax_cdf.step(x, y, where="post", color=color, label=label)
        if result.timeline:
            hours, alloc, pending = _timeline(result)
            keep = downsample_indices(alloc)
            ax_alloc.step(hours[keep], alloc[keep], where="post", color=color, label=label, linewidth=1)
            keep = downsample_indices(pending)
            ax_pending.step(hours[keep], pending[keep], where="post", color=color, label=label, linewidth=1)

    if total_gpus:
        ax_alloc.axhline(total_gpus, color="grey", linestyle="--", linewidth=1, label="capacity")

    ax_cdf.set_xscale("log")
    ax_cdf.set_ylim(0.0, 1.0)
    ax_cdf.set_title("Job completion time CDF")
    ax_cdf.set_xlabel(f"JCT (seconds, log scale; < {MIN_JCT_PLOTTED_S:g} s drawn at {MIN_JCT_PLOTTED_S:g} s)")
    ax_cdf.set_ylabel("fraction of jobs with JCT ≤ x")

    ax_alloc.set_title("Allocated GPUs over time")
    ax_alloc.set_xlabel("time since trace start (hours)")
    ax_alloc.set_ylabel("allocated GPUs")
    ax_alloc.set_ylim(bottom=0, top=max(total_gpus * 1.12, ax_alloc.get_ylim()[1]))

    ax_pending.set_title("Pending jobs over time")
    ax_pending.set_xlabel("time since trace start (hours)")
    ax_pending.set_ylabel("pending jobs")
    ax_pending.set_ylim(bottom=0)

    for ax in (ax_cdf, ax_alloc, ax_pending):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=9)

    fig.savefig(os.fspath(path), format="png")
