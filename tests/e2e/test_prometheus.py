"""A real Prometheus scrapes the live controller while a workload with a preemption runs; then
every dashboard query and every alert expression is run through Prometheus' HTTP API."""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import yaml

from tests.e2e.conftest import Corral

pytestmark = [pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "corral-overview.json"
RULES = REPO / "deploy" / "prometheus" / "corral-rules.yaml"
# Series that exist only where something was measured or happened: GPU utilisation and memory
# come from NVML on real GPUs (none here).
MAY_BE_EMPTY = ("corral_gpu_utilization_ratio", "corral_gpu_memory_used_bytes")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prometheus(corral: Corral, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: run `bash .ci/prometheus.sh`"
    target = urlparse(corral.status()["api_url"]).netloc
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "corral", "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]}
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # ready, and the corral target scraped and up
            try:
                if _query(url, 'up{job="corral"} == 1'):
                    break
            except (httpx.HTTPError, ValueError):  # not up yet, or "Service Unavailable" while starting
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(
                f"prometheus never scraped corral: {(tmp_path / 'prometheus.log').read_text()[-2000:]}"
            )
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def _query(url: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": expr} if at is None else {"query": expr, "time": str(at)}
    body = httpx.get(f"{url}/api/v1/query", params=params, timeout=10).json()
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def _dashboard_queries() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def walk(panel: dict[str, Any]) -> None:
        for target in panel.get("targets", []):
            if target.get("expr"):
                out.append((str(panel.get("title")), str(target["expr"])))
        for inner in panel.get("panels", []):
            walk(inner)

    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        walk(panel)
    return out


def _substitute(expr: str) -> str:
    # What Grafana puts in for the template variables ("All" = match anything).
    return expr.replace("$__rate_interval", "2m").replace("$queue", ".*").replace("$region", ".*")


def _run_workload_with_a_preemption(corral: Corral) -> None:
    low = corral.submit(
        "--nodes", "2", "--gpus-per-node", "8", "--region", "cn-north", "--priority", "low",
        "--grace", "2", "--", "sleep", "600",
    )  # fmt: skip
    corral.wait_for(low, ["RUNNING"], timeout=60)
    high = corral.submit("--gpus", "8", "--region", "cn-north", "--priority", "high", "--", "sleep", "3")
    corral.wait_for(high, ["SUCCEEDED"], timeout=90)
    corral.wait_for(low, ["RUNNING"], timeout=90)  # resumed
    corral.run("cancel", low, "--grace", "0")
    corral.wait_for(low, ["CANCELLED"], timeout=30)


def test_every_dashboard_query_and_alert_expression_returns_sane_series(
    corral: Corral, prometheus: str
) -> None:
    t0 = time.time()
    _run_workload_with_a_preemption(corral)
    time.sleep(4)  # a few more scrapes after the last change
    for title, expr in _dashboard_queries():
        result = _query(prometheus, _substitute(expr))
        if any(name in expr for name in MAY_BE_EMPTY):
            continue
        assert result, f"panel {title!r}: no series for {expr}"
        for series in result:
            value = float(series["value"][1])
            if math.isnan(value) and "histogram_quantile" in expr:
                continue  # a quantile of no observations (an idle queue) is undefined: Grafana leaves a gap
            assert math.isfinite(value) and value >= 0, (title, expr, series)
    # Simulated nodes have declared GPUs, not measured ones: no utilisation is ever invented.
    assert _query(prometheus, "corral_gpu_utilization_ratio") == []
    # Sane values: allocation within capacity, ratios within 0–1, counters never decrease.
    assert _query(prometheus, 'sum(corral_gpus{state="allocated"}) <= sum(corral_gpus{state="total"})')
    assert not _query(prometheus, "corral_queue_fair_share_ratio > 1 or corral_queue_fair_share_ratio < 0")
    preempted = _query(prometheus, 'sum(corral_jobs_preempted_total{reason="preempt"})')
    assert float(preempted[0]["value"][1]) >= 1  # the workload's preemption was counted
    for counter in (
        "corral_jobs_submitted_total",
        "corral_jobs_finished_total",
        "corral_jobs_preempted_total",
    ):
        body = httpx.get(
            f"{prometheus}/api/v1/query_range",
            params={"query": counter, "start": str(t0), "end": str(time.time()), "step": "1"},
            timeout=10,
        ).json()
        for series in body["data"]["result"]:
            values = [float(v) for _, v in series["values"]]
            assert values == sorted(values), (counter, series["metric"])
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            _query(prometheus, rule["expr"])  # every alert expression evaluates on real data
    alerts = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert sum(len(g["rules"]) for g in alerts) >= 7  # the rule file is loaded by Prometheus itself
