"""Run summaries, the comparison table and its JSON form."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from scheduler.sim.bounds import Bounds
from scheduler.sim.records import JobRecord, RunResult, TimelinePoint
from scheduler.sim.report import (
    PolicySummary,
    allocation_rate,
    comparison_json,
    comparison_table,
    format_duration,
    jobs_present_at_submit,
    summarize,
    to_json_dict,
)


def _rec(
    job_id: str, submit: float, start: float, finish: float, duration: float, gpus: int = 1
) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        queue="q",
        gpus=gpus,
        submit_time=submit,
        first_start=start,
        finish_time=finish,
        duration=duration,
    )


def _tp(t: float, alloc: int, pending: int = 0) -> TimelinePoint:
    return TimelinePoint(time=t, allocated_gpus=alloc, pending_jobs=pending, running_jobs=0)


def _two_job_run() -> RunResult:
    # 4 GPUs. A: submit 0, runs 0→10 on 4 GPUs. B: submit 0, waits, runs 10→20 on 2 GPUs.
    # JCTs 10, 20; waits 0, 10. Timeline: 4 GPUs on 0..10, 2 on 10..20, 0 after.
    return RunResult(
        policy="fifo",
        total_gpus=4,
        records=[_rec("a", 0, 0, 10, 10, gpus=4), _rec("b", 0, 10, 20, 10, gpus=2)],
        timeline=[_tp(0, 4, 1), _tp(10, 2, 0), _tp(20, 0, 0)],
        preemptions=3,
        rejected=["too-big"],
    )


def test_summary_by_hand() -> None:
    s = summarize(_two_job_run())
    assert s.policy == "fifo" and s.jobs == 2 and s.rejected == 1 and s.preemptions == 3
    assert s.avg_jct_s == pytest.approx(15.0)
    # Linear interpolation: p50 of [10, 20] = 15; p99 = 10 + 0.99 × 10 = 19.9.
    assert s.p50_jct_s == pytest.approx(15.0)
    assert s.p99_jct_s == pytest.approx(19.9)
    assert s.avg_wait_s == pytest.approx(5.0)
    assert s.p99_wait_s == pytest.approx(9.9)
    assert s.makespan_s == pytest.approx(20.0)
    # (4 × 10 + 2 × 10) / (4 × 20) = 0.75
    assert s.gpu_allocation_rate == pytest.approx(0.75)
    # Slowdowns 1 and 2.
    assert s.avg_slowdown == pytest.approx(1.5)
    assert s.p99_slowdown == pytest.approx(1.99)


def test_allocation_rate_window_and_gaps() -> None:
    # Window [5, 25] on 4 GPUs; nothing before the first point (t=10); 4 GPUs on 10..15, 1 on 15..30.
    timeline = [_tp(15, 1), _tp(10, 4)]  # unsorted on purpose
    # busy = 4 × 5 + 1 × 10 = 30 GPU-s of 80.
    assert allocation_rate(timeline, 4, 5, 25) == pytest.approx(30 / 80)
    assert allocation_rate([], 4, 0, 10) == 0.0
    assert allocation_rate(timeline, 4, 10, 10) == 0.0
    # Two points at one time: the later one holds.
    assert allocation_rate([_tp(0, 4), _tp(0, 2)], 4, 0, 10) == pytest.approx(0.5)


def test_slowdown_floors_duration_at_one_second() -> None:
    run = RunResult(policy="p", total_gpus=1, records=[_rec("a", 0, 1.5, 2.0, 0.5)])
    s = summarize(run)
    assert s.avg_slowdown == pytest.approx(2.0)  # 2 s JCT / max(0.5 s, 1 s)


def test_jobs_present_and_ftf_rho_by_hand() -> None:
    # 4 GPUs. A (0→10, dur 10, 4 GPUs), B (0→20, dur 10, 2 GPUs), C (submit 15 → 21, dur 1, 1 GPU),
    # D (submit 10 → 11, dur 1, 1 GPU) arrives exactly when A finishes, so A no longer counts.
    records = [
        _rec("a", 0, 0, 10, 10, gpus=4),
        _rec("b", 0, 10, 20, 10, gpus=2),
        _rec("c", 15, 20, 21, 1, gpus=1),
        _rec("d", 10, 10, 11, 1, gpus=1),
    ]
    # N: A, B → {A, B} = 2; D at 10 → {B, D} = 2; C at 15 → {B, C} = 2.
    assert jobs_present_at_submit(records).tolist() == [2, 2, 2, 2]
    # T_iso: A = 10 × max(1, 4·2/4) = 20 → ρ 0.5; B = 10 × max(1, 2·2/4) = 10 → ρ 2;
    # C = 1 × max(1, 2/4) = 1 → ρ 6; D = 1 → ρ 1.
    s = summarize(RunResult(policy="p", total_gpus=4, records=records))
    assert s.max_ftf_rho == pytest.approx(6.0)


def test_zero_jct_job_counts_itself() -> None:
    records = [_rec("z", 5, 5, 5, 0)]
    assert jobs_present_at_submit(records).tolist() == [1]


def test_empty_run_is_all_zeros() -> None:
    s = summarize(RunResult(policy="empty", total_gpus=8))
    d = to_json_dict(s)
    assert all(v == 0 for v in d.values())
    json.dumps(d, allow_nan=False)


def test_json_keys() -> None:
    d = to_json_dict(summarize(_two_job_run()))
    assert set(d) == {
        "avg_jct_s",
        "p50_jct_s",
        "p99_jct_s",
        "avg_wait_s",
        "p99_wait_s",
        "makespan_s",
        "gpu_allocation_rate",
        "preemptions",
        "jobs",
        "avg_slowdown",
        "p99_slowdown",
        "max_ftf_rho",
        "rejected",
    }
    assert isinstance(d["jobs"], int) and isinstance(d["preemptions"], int)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.42, "0.4 s"),
        (12, "12 s"),
        (270, "4.5 m"),
        (41 * 60, "41 m"),
        (2.3 * 3600, "2.3 h"),
        (3 * 86400, "3.0 d"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def _summaries() -> dict[str, PolicySummary]:
    run = _two_job_run()
    other = RunResult(
        policy="srpt",
        total_gpus=4,
        records=[_rec("a", 0, 0, 10, 10, gpus=4), _rec("b", 0, 10, 20, 10, gpus=2)],
        timeline=[_tp(0, 4)],
    )
    return {"fifo": summarize(run), "srpt": summarize(other)}


def test_comparison_table_renders_rows() -> None:
    bounds = Bounds(avg_jct_s=12.0, makespan_s=16.0)
    table = comparison_table(_summaries(), bounds)
    buf = io.StringIO()
    Console(file=buf, width=250, color_system=None).print(table)
    text = buf.getvalue()
    lines = text.splitlines()
    fifo = next(line for line in lines if "fifo" in line)
    assert "15 s" in fifo  # avg JCT
    assert "75.0%" in fifo  # allocation rate
    assert "1.25×" in fifo  # 15 / 12
    assert "20 s" in fifo and "1.25×" in fifo  # makespan 20 / 16
    assert any("srpt" in line for line in lines)
    bound = next(line for line in lines if "lower bound" in line)
    assert "12 s" in bound and "16 s" in bound
    assert "avg JCT / bound" in text and "makespan / bound" in text


def test_comparison_json() -> None:
    bounds = Bounds(avg_jct_s=12.0, makespan_s=16.0)
    out = comparison_json(_summaries(), bounds)
    assert set(out) == {"policies", "bounds", "ratios"}
    assert set(out["policies"]) == {"fifo", "srpt"}
    assert out["bounds"] == {"avg_jct_s": 12.0, "makespan_s": 16.0}
    assert out["ratios"]["fifo"]["avg_jct"] == pytest.approx(15 / 12)
    assert out["ratios"]["fifo"]["makespan"] == pytest.approx(20 / 16)
    json.dumps(out, allow_nan=False)
    zero = comparison_json(_summaries(), Bounds(0.0, 0.0))
    assert zero["ratios"]["fifo"] == {"avg_jct": None, "makespan": None}
