"""The metric names Corral exports (scheduler/metrics.py), and a small PromQL scanner that lists the
metric names an expression reads, so the dashboard and the alert rules cannot drift from them."""

from __future__ import annotations

import re
from collections.abc import Iterable

GAUGES = frozenset(
    {
        "corral_gpus",
        "corral_nodes",
        "corral_node_gpus_allocated",
        "corral_gpu_utilization_ratio",
        "corral_gpu_memory_used_bytes",
        "corral_queue_quota_gpus",
        "corral_queue_used_gpus",
        "corral_queue_borrowed_gpus",
        "corral_queue_pending_jobs",
        "corral_queue_fair_share_ratio",
        "corral_jobs",
        "corral_gpu_accounting_drift",
        "corral_residency_label_conflicts",
        "corral_leader",
        "corral_build_info",
        "corral_audit_head_seq",
    }
)
COUNTERS = frozenset(
    {
        "corral_jobs_submitted_total",
        "corral_jobs_finished_total",
        "corral_jobs_preempted_total",
        "corral_job_gpu_seconds_total",
        "corral_scheduling_decisions_total",
        "corral_residency_rejections_total",
        "corral_store_errors_total",
        "corral_start_failures_total",
        "corral_audit_dropped_total",
    }
)
HISTOGRAMS = frozenset({"corral_job_wait_seconds", "corral_scheduling_cycle_seconds"})
# `up` comes from Prometheus itself (scrape job "corral").
KNOWN_METRICS = GAUGES | COUNTERS | HISTOGRAMS | {"up"}

_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
    | {"inf", "nan"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.$:])[A-Za-z_:][\w:]*")
_CORRAL = re.compile(r"\bcorral_\w+")


def metric_names(expr: str) -> set[str]:
    """Metric names `expr` selects: identifiers left once strings, label matchers, ranges and label
    lists are cut out, that are neither function calls nor keywords. Also every `corral_...` word
    anywhere in the raw text (a `{__name__="corral_..."}` selector included)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set(_CORRAL.findall(expr))
    for m in _IDENT.finditer(text):
        if text[m.end() :].lstrip().startswith("("):
            continue  # a function: rate(, sum(, histogram_quantile(, vector(...
        if m.group().lower() in _KEYWORDS:
            continue
        names.add(m.group())
    return names


def is_known(name: str, extra: Iterable[str] = ()) -> bool:
    if name in KNOWN_METRICS or name in set(extra):
        return True
    return any(name.endswith(s) and name[: -len(s)] in HISTOGRAMS for s in _HISTOGRAM_SUFFIXES)


def unknown_metrics(expr: str, extra: Iterable[str] = ()) -> set[str]:
    extra = set(extra)
    return {name for name in metric_names(expr) if not is_known(name, extra)}
