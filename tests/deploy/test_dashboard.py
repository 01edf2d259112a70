"""deploy/grafana/corral-overview.json: it is what build_dashboard.py generates, every panel queries
through the `datasource` variable, every query parses (promtool) and reads only metrics Corral
exports, and the panels the issue asks for are there."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.deploy.conftest import DASHBOARD, GENERATOR, run_promtool
from tests.deploy.promql_names import metric_names, unknown_metrics

DS_VAR = "${datasource}"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboard", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _queries() -> list[tuple[str, str]]:
    """(panel title / refId, expr) of every target."""
    return [(f"{p['title']} / {t['refId']}", t["expr"]) for p in _panels() for t in p["targets"]]


def _variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in _dashboard()["templating"]["list"]}


def test_committed_json_is_generated() -> None:
    assert DASHBOARD.read_text(encoding="utf-8") == _generator().render(), (
        "stale: run python deploy/grafana/build_dashboard.py"
    )


def test_generator_check_mode(tmp_path: Path) -> None:
    module = _generator()
    out = tmp_path / "dash.json"
    assert module.main(["--check", "--output", str(out)]) == 1
    assert module.main(["--output", str(out)]) == 0
    assert module.main(["--check", "--output", str(out)]) == 0


def test_importable_with_datasource_and_queue_variables() -> None:
    dash = _dashboard()
    assert dash["schemaVersion"] >= 36
    assert dash["uid"] and dash["title"] and dash["id"] is None
    assert "__inputs" not in dash  # nothing to ask on import: the variable picks the data source
    variables = _variables()
    ds = variables["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    queue = variables["queue"]
    assert queue["type"] == "query"
    assert queue["datasource"]["uid"] == DS_VAR
    assert queue["definition"] == "label_values(corral_queue_quota_gpus, queue)"
    assert queue["query"]["query"] == queue["definition"]
    for var in variables.values():
        if var["type"] == "query":
            metric = re.fullmatch(r"label_values\((\w+),\s*\w+\)", var["definition"])
            assert metric and not unknown_metrics(metric.group(1)), var["definition"]
    exprs = " ".join(expr for _, expr in _queries())
    for name in variables:
        if name != "datasource":
            assert f"${name}" in exprs, f"variable {name} is used by no query"


@pytest.mark.parametrize("panel", _panels(), ids=lambda p: p["title"])
def test_panel_queries_through_datasource_variable(panel: dict[str, Any]) -> None:
    assert panel["datasource"] == {"type": "prometheus", "uid": DS_VAR}
    assert panel["targets"], "a panel without queries"
    for target in panel["targets"]:
        assert target["datasource"] == {"type": "prometheus", "uid": DS_VAR}
        assert target["expr"].strip()
    assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


@pytest.mark.parametrize(("where", "expr"), _queries(), ids=[w for w, _ in _queries()])
def test_query_reads_only_known_metrics(where: str, expr: str) -> None:
    assert metric_names(expr), "a query that reads no metric"
    assert not unknown_metrics(expr)


def test_every_query_parses(promtool: str, tmp_path: Path) -> None:
    """promtool checks each query as a recording rule, template variables filled in."""
    fill = {"$__rate_interval": "5m", "$queue": ".*", "$region": ".*"}
    rules = []
    for n, (where, expr) in enumerate(_queries()):
        for var, value in fill.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"{where}: unknown variable in {expr}"
        rules.append({"record": f"dashboard:query_{n}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = run_promtool(promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def _has_panel(kind: str | None, *needles: str) -> bool:
    for panel in _panels():
        if kind is not None and panel["type"] != kind:
            continue
        exprs = " ".join(t["expr"] for t in panel["targets"])
        if all(n in exprs for n in needles):
            return True
    return False


@pytest.mark.parametrize(
    ("what", "kind", "needles"),
    [
        ("cluster GPUs allocated vs total", "timeseries", ('state="allocated"', 'state="total"')),
        ("GPU utilization over time", "timeseries", ("corral_gpu_utilization_ratio",)),
        ("allocation by queue vs quota", "timeseries", ("corral_queue_used_gpus", "corral_queue_quota_gpus")),
        ("borrowed GPUs", None, ("corral_queue_borrowed_gpus",)),
        ("pending jobs by reason", "timeseries", ("sum by (reason) (corral_queue_pending_jobs",)),
        (
            "wait time p50/p95 by queue",
            "timeseries",
            ("histogram_quantile(0.5, sum by (queue, le)", "histogram_quantile(0.95, sum by (queue, le)"),
        ),
        ("preemptions", "timeseries", ("rate(corral_jobs_preempted_total",)),
        ("node states", "timeseries", ("sum by (state) (corral_nodes",)),
        (
            "scheduling cycle p50/p99",
            "timeseries",
            ("histogram_quantile(0.5", "histogram_quantile(0.99", "corral_scheduling_cycle_seconds_bucket"),
        ),
        ("per-node GPU allocation heatmap", "heatmap", ("by (node) (corral_node_gpus_allocated",)),
        ("per-node GPU utilization heatmap", "heatmap", ("by (node) (corral_gpu_utilization_ratio",)),
    ],
)
def test_required_panel(what: str, kind: str | None, needles: tuple[str, ...]) -> None:
    assert _has_panel(kind, *needles), f"no panel for {what}"


def test_measured_only_panels_cope_with_no_data() -> None:
    for panel in _panels():
        exprs = " ".join(t["expr"] for t in panel["targets"])
        if re.search(r"corral_gpu_(utilization_ratio|memory_used_bytes)", exprs):
            assert panel["fieldConfig"]["defaults"].get("noValue"), panel["title"]


def test_layout() -> None:
    panels = _dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    boxes = []
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        boxes.append((p["title"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
    for i, (a, ax0, ay0, ax1, ay1) in enumerate(boxes):
        for b, bx0, by0, bx1, by1 in boxes[i + 1 :]:
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, f"{a} overlaps {b}"
