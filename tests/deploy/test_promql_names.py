"""The scanner behind the dashboard's and the rules' metric-name checks finds what it should."""

from __future__ import annotations

import pytest

from tests.deploy.promql_names import metric_names, unknown_metrics


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "histogram_quantile(0.99, sum by (le) "
            '(rate(corral_scheduling_cycle_seconds_bucket{le!="x"}[5m])))',
            {"corral_scheduling_cycle_seconds_bucket"},
        ),
        ('(sum(up{job="corral"}) or vector(0)) == 0', {"up"}),
        (
            "scalar(sum(corral_queue_borrowed_gpus))"
            " - on (queue) group_left corral_queue_used_gpus offset 5m",
            {"corral_queue_borrowed_gpus", "corral_queue_used_gpus"},
        ),
        ('sum by (queue) (corral_jobs{state="PENDING", queue=~"$queue"}) > 1e3', {"corral_jobs"}),
        ('{__name__="corral_gpus"}', {"corral_gpus"}),
        ("60 * sum(rate(corral_jobs_submitted_total[$__rate_interval]))", {"corral_jobs_submitted_total"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
    assert unknown_metrics(expr) == set()


@pytest.mark.parametrize(
    ("expr", "unknown"),
    [
        ("sum(corral_gpu_total)", {"corral_gpu_total"}),
        ("corral_jobs_count", {"corral_jobs_count"}),  # only histograms have _count
        ("rate(node_cpu_seconds_total[5m]) and corral_leader", {"node_cpu_seconds_total"}),
        ("corral_job_wait_seconds_sum / corral_job_wait_seconds_count", set()),
    ],
)
def test_unknown_metrics(expr: str, unknown: set[str]) -> None:
    assert unknown_metrics(expr) == unknown
