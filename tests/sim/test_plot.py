"""The comparison figure: it is written, is a PNG, and large runs are drawn downsampled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure

from scheduler.sim.plot import MAX_CDF_POINTS, MAX_TIMELINE_POINTS, downsample_indices, plot_runs
from scheduler.sim.records import JobRecord, RunResult, TimelinePoint

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(policy: str, n_jobs: int, n_points: int, seed: int) -> RunResult:
    rng = np.random.default_rng(seed)
    submits = np.sort(rng.uniform(0, 36_000, n_jobs))
    durations = rng.lognormal(6, 1.5, n_jobs)
    waits = rng.exponential(600, n_jobs)
    records = [
        JobRecord(
            job_id=f"{policy}-{i}",
            queue="q",
            gpus=1,
            submit_time=float(s),
            first_start=float(s + w),
            finish_time=float(s + w + d),
            duration=float(d),
        )
        for i, (s, d, w) in enumerate(zip(submits, durations, waits, strict=True))
    ]
    times = np.sort(rng.uniform(0, 40_000, n_points))
    alloc = rng.integers(0, 64, n_points)
    pending = rng.integers(0, 500, n_points)
    timeline = [
        TimelinePoint(time=float(t), allocated_gpus=int(a), pending_jobs=int(p), running_jobs=int(a))
        for t, a, p in zip(times, alloc, pending, strict=True)
    ]
    return RunResult(policy=policy, total_gpus=64, records=records, timeline=timeline)


def test_plot_writes_png(tmp_path: Path) -> None:
    out = tmp_path / "runs.png"
    plot_runs([_run("fifo", 200, 300, 1), _run("srpt", 200, 300, 2)], out)
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_plot_empty_inputs(tmp_path: Path) -> None:
    out = tmp_path / "empty.png"
    plot_runs([RunResult(policy="none", total_gpus=8)], str(out))
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_large_runs_draw_a_bounded_number_of_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What keeps a 100,000-job run quick to plot (bench/, not a timed test, measures how quick):
    no line drawn has more than the caps' points, however long the run."""
    big = _run("a", 100_000, 200_000, 3)
    runs = [big, RunResult(policy="b", total_gpus=64, records=big.records, timeline=big.timeline)]
    drawn: list[int] = []  # points of each policy's line
    real_savefig = Figure.savefig

    def count_then_save(fig: Figure, *args: Any, **kwargs: Any) -> None:
        lines = [line for ax in fig.axes for line in ax.get_lines() if line.get_label() != "capacity"]
        drawn.extend(len(line.get_xdata()) for line in lines)
        real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", count_then_save)
    out = tmp_path / "big.png"
    plot_runs(runs, out)
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert len(drawn) == 2 * 3, drawn  # two policies × three panels
    assert max(drawn) <= max(MAX_TIMELINE_POINTS, MAX_CDF_POINTS), drawn
    assert min(drawn) > 100, drawn  # downsampled, not emptied


def test_downsample_keeps_extremes_and_ends() -> None:
    values = np.zeros(100_000)
    values[12_345] = 99.0  # a spike plain striding would miss
    values[54_321] = -7.0
    idx = downsample_indices(values, 5_000)
    assert idx.size <= 5_100
    assert np.all(np.diff(idx) > 0)
    assert idx[0] == 0 and idx[-1] == values.size - 1
    assert 12_345 in idx and 54_321 in idx
    small = np.arange(10, dtype=np.float64)
    assert downsample_indices(small, 5_000).tolist() == list(range(10))
