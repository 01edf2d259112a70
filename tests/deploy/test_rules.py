"""deploy/prometheus/corral-rules.yaml: promtool accepts it and its unit tests pass, every alert
carries what on-call needs (severity, summary, description, runbook), and the expressions read only
metrics Corral exports."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.conftest import RULE_TESTS, RULES, run_promtool
from tests.deploy.promql_names import metric_names, unknown_metrics

# The list: controller down / no leader, slow cycles, pending while GPUs are free
# (fragmentation), a starved queue, preemption storm, nodes down, store errors.
REQUIRED_ALERTS = {
    "CorralControllerDown",
    "CorralNoLeader",
    "CorralSchedulingCycleSlow",
    "CorralPendingWhileGpusFree",
    "CorralQueueStarved",
    "CorralPreemptionStorm",
    "CorralNodesDown",
    "CorralStoreErrors",
}
SEVERITIES = {"critical", "warning", "info"}


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def test_promtool_check_rules(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests(promtool: str) -> None:
    result = run_promtool(promtool, "test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_required_alerts_exist_once() -> None:
    names = [rule["alert"] for rule in _alerts()]
    assert len(names) == len(set(names)), names
    assert not REQUIRED_ALERTS - set(names), "missing alerts"


@pytest.mark.parametrize("alert", _alerts(), ids=lambda rule: rule["alert"])
def test_alert_has_severity_for_and_annotations(alert: dict[str, Any]) -> None:
    assert alert.get("labels", {}).get("severity") in SEVERITIES
    assert alert.get("for"), "every alert waits a while before it fires"
    annotations = alert.get("annotations", {})
    for key in ("summary", "description", "runbook"):
        value = annotations.get(key)
        assert isinstance(value, str) and value.strip(), f"missing annotation {key}"
        assert "\n" not in value.strip(), f"{key} should be one line"


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: rule.get("alert") or rule["record"])
def test_rule_reads_only_known_metrics(rule: dict[str, Any]) -> None:
    recorded = {r["record"] for r in _rules() if "record" in r}
    names = metric_names(rule["expr"])
    assert names, "an expression that reads no metric"
    assert not unknown_metrics(rule["expr"], extra=recorded)


def test_unit_tests_cover_each_alert_firing_and_quiet() -> None:
    """Every alert, fragmentation and starvation included, has a case where it fires and one
    where it must stay quiet."""
    doc = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in _alerts()}
    assert {"CorralPendingWhileGpusFree", "CorralQueueStarved"} <= fires & quiet
    assert alerts - fires == set()
    assert alerts - quiet == set()
