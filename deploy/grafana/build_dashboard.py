"""Generates deploy/grafana/corral-overview.json, the Corral overview dashboard for Grafana.

    python deploy/grafana/build_dashboard.py           # rewrite the JSON next to this file
    python deploy/grafana/build_dashboard.py --check   # exit 1 when the committed JSON is stale

Plain dicts (no grafanalib): the output is Grafana's dashboard JSON model (schemaVersion 39,
Grafana 10+), importable as is. Every panel and query takes its data source from the `datasource`
template variable, so the import asks for nothing. tests/deploy/test_dashboard.py checks the JSON
is up to date and that every query parses and names only metrics Corral exports.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).with_name("corral-overview.json")

DS: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
Q = 'queue=~"$queue"'
R = 'region=~"$region"'
RATE = "$__rate_interval"

Panel = dict[str, Any]


def target(expr: str, legend: str = "", ref: str = "A", **extra: Any) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "refId": ref, **extra}


def targets(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def timeseries(
    title: str,
    description: str,
    tgts: list[dict[str, Any]],
    *,
    unit: str = "short",
    stack: bool = False,
    min_zero: bool = True,
    no_value: str | None = None,
    overrides: list[dict[str, Any]] | None = None,
) -> Panel:
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if stack else 0,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
    }
    if min_zero:
        defaults["min"] = 0
    if no_value is not None:
        defaults["noValue"] = no_value
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": {
            "legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    description: str,
    tgts: list[dict[str, Any]],
    *,
    unit: str = "short",
    defaults: dict[str, Any] | None = None,
    **opts: Any,
) -> Panel:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": {"unit": unit, **(defaults or {})}, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
            **opts,
        },
    }


def heatmap(
    title: str,
    description: str,
    tgt: dict[str, Any],
    *,
    unit: str,
    scheme: str,
    defaults: dict[str, Any] | None = None,
) -> Panel:
    """One row per node: the series are already the buckets (calculate off, ordinal y axis)."""
    return {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [tgt],
        "fieldConfig": {"defaults": {"unit": unit, **(defaults or {})}, "overrides": []},
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {
                "mode": "scheme",
                "scheme": scheme,
                "steps": 64,
                "exponent": 0.5,
                "fill": "dark-orange",
            },
            "yAxis": {"axisPlacement": "left", "reverse": False},
            "rowsFrame": {"layout": "auto"},
            "legend": {"show": True},
            "tooltip": {"show": True, "yHistogram": False},
            "cellValues": {"unit": unit},
        },
    }


def dashed(regex: str) -> dict[str, Any]:
    """Series whose name matches `regex` drawn as dashed lines without fill (limits, quotas)."""
    return {
        "matcher": {"id": "byRegexp", "options": regex},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.fillOpacity", "value": 0},
            {"id": "custom.stacking", "value": {"mode": "none", "group": "A"}},
        ],
    }


def row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


# (panel, width, height); a row takes the whole width.
def layout() -> list[tuple[Panel, int, int]]:
    util_note = "Only nodes whose GPUs are measured export utilization; empty when none are."
    return [
        (row("Cluster"), 24, 1),
        (
            timeseries(
                "GPUs: allocated vs total",
                "GPUs by state, summed over the selected regions and GPU types.",
                targets(
                    (f'sum(corral_gpus{{state="total",{R}}})', "total"),
                    (f'sum(corral_gpus{{state="allocated",{R}}})', "allocated"),
                    (f'sum(corral_gpus{{state="free",{R}}})', "free"),
                    (f'sum(corral_gpus{{state="down",{R}}})', "down"),
                ),
                overrides=[dashed("^total$")],
            ),
            9,
            8,
        ),
        (
            timeseries(
                "GPU allocation and utilization",
                "Allocated share of up GPUs (by the scheduler), and the mean measured utilization of "
                "GPUs that report it (by the hardware). " + util_note,
                targets(
                    (
                        f'sum(corral_gpus{{state="allocated",{R}}})'
                        f' / sum(corral_gpus{{state=~"allocated|free",{R}}})',
                        "allocated / up",
                    ),
                    ("avg(corral_gpu_utilization_ratio)", "utilization (measured)"),
                ),
                unit="percentunit",
                no_value="no data",
            ),
            9,
            8,
        ),
        (
            stat(
                "Allocated GPUs now",
                "Allocated GPUs by GPU type, over the selected regions.",
                targets((f'sum by (gpu_type) (corral_gpus{{state="allocated",{R}}})', "{{gpu_type}}")),
                graphMode="none",
            ),
            3,
            8,
        ),
        (
            stat(
                "Measured GPU memory in use",
                "Sum of GPU memory used on GPUs that report it. " + util_note,
                targets(("sum(corral_gpu_memory_used_bytes)", "memory")),
                unit="bytes",
                defaults={"noValue": "not measured"},
            ),
            3,
            8,
        ),
        (
            timeseries(
                "Node states",
                "Nodes by state over the selected regions.",
                targets((f"sum by (state) (corral_nodes{{{R}}})", "{{state}}")),
                stack=True,
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Jobs by state",
                "Jobs in the scheduler by state (finished jobs are not counted).",
                targets((f"sum by (state) (corral_jobs{{{Q}}})", "{{state}}")),
                stack=True,
            ),
            12,
            8,
        ),
        (row("Queues"), 24, 1),
        (
            timeseries(
                "GPUs by queue: used vs quota",
                "GPUs each queue uses (solid) against its quota summed over GPU types (dashed). "
                "Above the quota, a queue runs on borrowed GPUs.",
                targets(
                    (f"sum by (queue) (corral_queue_used_gpus{{{Q}}})", "{{queue}} used"),
                    (f"sum by (queue) (corral_queue_quota_gpus{{{Q}}})", "{{queue}} quota"),
                ),
                overrides=[dashed(" quota$")],
            ),
            12,
            9,
        ),
        (
            timeseries(
                "Borrowed GPUs by queue",
                "GPUs queues use beyond their quota (preemptible by queues under theirs).",
                targets((f"sum by (queue) (corral_queue_borrowed_gpus{{{Q}}})", "{{queue}}")),
                stack=True,
            ),
            6,
            9,
        ),
        (
            stat(
                "Quota used now",
                "Used GPUs over quota per queue; over 100% is borrowing.",
                targets(
                    (
                        f"sum by (queue) (corral_queue_used_gpus{{{Q}}}) "
                        f"/ sum by (queue) (corral_queue_quota_gpus{{{Q}}} > 0)",
                        "{{queue}}",
                    )
                ),
                unit="percentunit",
                graphMode="none",
                defaults={
                    "thresholds": {
                        "mode": "absolute",
                        "steps": [
                            {"color": "blue", "value": None},
                            {"color": "green", "value": 0.5},
                            {"color": "orange", "value": 1.0},
                        ],
                    }
                },
            ),
            6,
            9,
        ),
        (
            timeseries(
                "Pending jobs by reason",
                "Pending jobs by pending-reason code (corral jobs shows the same codes).",
                targets((f"sum by (reason) (corral_queue_pending_jobs{{{Q}}})", "{{reason}}")),
                stack=True,
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Wait time p50 / p95 by queue",
                "Time from submission to first start of the jobs that started in each interval.",
                targets(
                    (
                        "histogram_quantile(0.5, sum by (queue, le) "
                        f"(rate(corral_job_wait_seconds_bucket{{{Q}}}[{RATE}])))",
                        "{{queue}} p50",
                    ),
                    (
                        "histogram_quantile(0.95, sum by (queue, le) "
                        f"(rate(corral_job_wait_seconds_bucket{{{Q}}}[{RATE}])))",
                        "{{queue}} p95",
                    ),
                ),
                unit="s",
                overrides=[dashed(" p95$")],
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Preemptions per minute by queue / reason",
                "preempt: the scheduler took the GPUs for another job; node_fail: the node went down.",
                targets(
                    (
                        f"60 * sum by (queue, reason) (rate(corral_jobs_preempted_total{{{Q}}}[{RATE}]))",
                        "{{queue}} {{reason}}",
                    )
                ),
                stack=True,
            ),
            8,
            8,
        ),
        (
            timeseries(
                "Fair-share ratio by queue",
                "Each queue's share of usage against its fair share (1 = at its share).",
                targets((f"corral_queue_fair_share_ratio{{{Q}}}", "{{queue}}")),
            ),
            8,
            8,
        ),
        (
            timeseries(
                "Job throughput per minute",
                "Submitted jobs, and finished jobs by result.",
                targets(
                    (f"60 * sum(rate(corral_jobs_submitted_total{{{Q}}}[{RATE}]))", "submitted"),
                    (
                        f"60 * sum by (result) (rate(corral_jobs_finished_total{{{Q}}}[{RATE}]))",
                        "{{result}}",
                    ),
                ),
            ),
            8,
            8,
        ),
        (row("Scheduler"), 24, 1),
        (
            stat(
                "Controllers up",
                "Scrape targets of job corral that answer.",
                targets(('sum(up{job="corral"})', "up")),
                graphMode="none",
                defaults={
                    "thresholds": {
                        "mode": "absolute",
                        "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}],
                    }
                },
            ),
            6,
            4,
        ),
        (
            stat(
                "Leader",
                "Controllers that report themselves leader: 1 is healthy.",
                targets(("sum(corral_leader)", "leaders")),
                graphMode="none",
                defaults={
                    "noValue": "0",
                    "thresholds": {
                        "mode": "absolute",
                        "steps": [
                            {"color": "red", "value": None},
                            {"color": "green", "value": 1},
                            {"color": "red", "value": 2},
                        ],
                    },
                },
            ),
            6,
            4,
        ),
        (
            stat(
                "Store errors (1 h)",
                "Errors from the state store in the last hour.",
                targets(("sum(increase(corral_store_errors_total[1h]))", "errors")),
                graphMode="none",
                defaults={
                    "noValue": "0",
                    "decimals": 0,
                    "thresholds": {
                        "mode": "absolute",
                        "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}],
                    },
                },
            ),
            6,
            4,
        ),
        (
            stat(
                "Version",
                "corral_build_info of the running controllers.",
                [target("count by (version) (corral_build_info)", "{{version}}", instant=True)],
                graphMode="none",
                textMode="name",
                colorMode="none",
            ),
            6,
            4,
        ),
        (
            timeseries(
                "Scheduling cycle latency p50 / p99",
                "Duration of the controller's scheduling cycles (the CorralSchedulingCycleSlow alert "
                "fires on p99 > 1 s for 15 minutes).",
                targets(
                    (
                        "histogram_quantile(0.5, sum by (le) "
                        f"(rate(corral_scheduling_cycle_seconds_bucket[{RATE}])))",
                        "p50",
                    ),
                    (
                        "histogram_quantile(0.99, sum by (le) "
                        f"(rate(corral_scheduling_cycle_seconds_bucket[{RATE}])))",
                        "p99",
                    ),
                    (f"sum(rate(corral_scheduling_cycle_seconds_count[{RATE}]))", "cycles/s"),
                ),
                unit="s",
                overrides=[
                    {
                        "matcher": {"id": "byName", "options": "cycles/s"},
                        "properties": [
                            {"id": "unit", "value": "short"},
                            {"id": "custom.axisPlacement", "value": "right"},
                        ],
                    }
                ],
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Scheduling decisions per minute",
                "Decisions by kind, and jobs rejected for data residency by region.",
                targets(
                    (f"60 * sum by (kind) (rate(corral_scheduling_decisions_total[{RATE}]))", "{{kind}}"),
                    (
                        f"60 * sum by (region) (rate(corral_residency_rejections_total{{{R}}}[{RATE}]))",
                        "residency rejected {{region}}",
                    ),
                ),
            ),
            12,
            8,
        ),
        (row("Nodes"), 24, 1),
        (
            heatmap(
                "GPUs allocated per node",
                "One row per node: GPUs allocated by the scheduler over time.",
                target(
                    f"sum by (node) (corral_node_gpus_allocated{{{R}}})",
                    "{{node}}",
                    interval="1m",
                    format="time_series",
                ),
                unit="short",
                scheme="Blues",
            ),
            12,
            14,
        ),
        (
            heatmap(
                "GPU utilization per node (measured)",
                "One row per node: mean utilization of its measured GPUs. " + util_note,
                target(
                    "avg by (node) (corral_gpu_utilization_ratio)",
                    "{{node}}",
                    interval="1m",
                    format="time_series",
                ),
                unit="percentunit",
                scheme="Greens",
                defaults={"noValue": "no GPUs measured"},
            ),
            12,
            14,
        ),
        (
            timeseries(
                "Nodes cordoned or down, and failed starts",
                "Nodes draining (cordoned after 3 failed starts in a row, or by an admin) or down, and "
                "starts that failed for a transient reason (retried with backoff).",
                targets(
                    (f'sum(corral_nodes{{state="draining",{R}}}) or vector(0)', "nodes draining"),
                    (f'sum(corral_nodes{{state="down",{R}}}) or vector(0)', "nodes down"),
                    (
                        f"60 * sum by (queue) (rate(corral_start_failures_total[{RATE}]))",
                        "failed starts/min {{queue}}",
                    ),
                ),
            ),
            12,
            8,
        ),
        (
            timeseries(
                "GPU accounting drift",
                "GPUs Corral counts free that Ray has not had free for 30 s or more (held outside "
                "Corral); they are treated as taken. The CorralGpuAccountingDrift alert fires after 10 min.",
                targets(("max by (node) (corral_gpu_accounting_drift)", "{{node}}")),
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Residency label conflicts",
                "Nodes out of scheduling because their declared region disagrees with their Kubernetes "
                "node's topology.kubernetes.io/region, or cannot be checked against it (Kubernetes "
                "topology on). The audit log names each node and why; CorralResidencyLabelConflict "
                "fires at once.",
                targets(("max(corral_residency_label_conflicts)", "nodes in conflict")),
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Audit log",
                "The audit chain's head (its last record's seq, exported by the leader) and denied "
                "requests the log could not record one by one (each gap is itself a record); "
                "CorralAuditRecordsDropped fires at once. Keep `corral audit head` elsewhere and "
                "check the chain with `corral audit verify --head`.",
                targets(
                    ("max(corral_audit_head_seq)", "head seq"),
                    ("sum(increase(corral_audit_dropped_total[$__rate_interval]))", "dropped denials"),
                ),
            ),
            12,
            8,
        ),
    ]


def variables() -> list[dict[str, Any]]:
    def query_var(name: str, label: str, query: str) -> dict[str, Any]:
        return {
            "type": "query",
            "name": name,
            "label": label,
            "datasource": DS,
            "definition": query,
            "query": {"query": query, "refId": f"{name}-values"},
            "refresh": 2,  # on time range change
            "sort": 1,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [],
            "hide": 0,
        }

    return [
        {
            "type": "datasource",
            "name": "datasource",
            "label": "Data source",
            "query": "prometheus",
            "current": {},
            "options": [],
            "refresh": 1,
            "regex": "",
            "hide": 0,
        },
        query_var("region", "Region", "label_values(corral_gpus, region)"),
        query_var("queue", "Queue", "label_values(corral_queue_quota_gpus, queue)"),
    ]


def build() -> dict[str, Any]:
    panels: list[Panel] = []
    x = y = row_h = 0
    for n, (panel, w, h) in enumerate(layout(), start=1):
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        panels.append({"id": n, "gridPos": {"h": h, "w": w, "x": x, "y": y}, **panel})
        x, row_h = x + w, max(row_h, h)
        if x >= 24:
            x, y, row_h = 0, y + row_h, 0
    return {
        "id": None,
        "uid": "corral-overview",
        "title": "Corral overview",
        "description": "Corral GPU scheduler: cluster, queues, scheduler and nodes. "
        "Generated by deploy/grafana/build_dashboard.py; edit that, not this JSON.",
        "tags": ["corral", "gpu", "scheduler"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "timezone": "browser",
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {"list": variables()},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is not up to date")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python deploy/grafana/build_dashboard.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
