"""helm/corral rendered with Helm's Go SDK for every value set in helm/corral/ci/, then checked
offline: strict lint, Kubernetes schemas (1.30 and the newest known), CRD schemas, security
defaults, exact RBAC, secrets kept out of ConfigMaps, the cluster file through Corral's own parser,
monitoring objects equal to the files in deploy/, and values the chart must refuse."""

from __future__ import annotations

import base64
import functools
import json
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import typer
import yaml

from scheduler.config import parse_live_config
from tests.helm.chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    ROOT,
    Rendered,
    ci_values,
    crd_validators,
    merged,
    render,
    render_raw,
    value_set_names,
)

VALUE_SETS = value_set_names()
FULLNAME = f"{RELEASE}"  # the release name contains the chart name, so it is used as it is
ADMIN_SECRET = f"{FULLNAME}-admin-token"
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
CORE_API_VERSIONS = {"v1", "apps/v1", "policy/v1", "rbac.authorization.k8s.io/v1"}
RULES = ROOT / "deploy" / "prometheus" / "corral-rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "corral-overview.json"


@functools.cache
def rendered(value_set: str) -> Rendered:
    """Each value set is rendered once per test session."""
    return render(ci_values(value_set))


def test_value_sets_cover_the_cases_the_chart_promises() -> None:
    assert {"postgresql", "sqlite", "raycluster", "monitoring", "existing-auth"} <= set(VALUE_SETS)


# --- lint and schemas -----------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_strict_lint_is_clean(value_set: str) -> None:
    for kube_version in ("v1.30.0", None):
        report = helm.lint(
            str(CHART), ci_values(value_set), strict=True, namespace=NAMESPACE, kube_version=kube_version
        )
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert report["errors"] == [] and problems == [], (report["errors"], problems)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_core_objects_are_valid_kubernetes(value_set: str, version: str) -> None:
    core = [
        o for o in rendered(value_set).manifests() if (o["apiVersion"], o["kind"]) not in crd_validators()
    ]
    assert core, "nothing rendered"
    for obj in core:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} on {version}: {exc.message} at {exc.path}")


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_custom_resources_are_valid_against_their_crds(value_set: str) -> None:
    validators = crd_validators()
    for obj in rendered(value_set).manifests():
        validator = validators.get((obj["apiVersion"], obj["kind"]))
        if validator is None:
            assert obj["apiVersion"] in CORE_API_VERSIONS, f"no schema for {obj['apiVersion']} {obj['kind']}"
            continue
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]]


def test_crd_validation_catches_a_misspelt_field() -> None:
    """The CRD check must be able to fail: an unknown field in a worker group is refused."""
    ray = rendered("raycluster").one("RayCluster")
    ray["spec"]["workerGroupSpecs"][0]["lables"] = {"x": "y"}
    assert list(crd_validators()[("ray.io/v1", "RayCluster")].iter_errors(ray))


def test_every_custom_resource_kind_is_rendered_somewhere() -> None:
    kinds = set().union(*(rendered(v).kinds() for v in VALUE_SETS))
    assert {"RayCluster", "ServiceMonitor", "PrometheusRule"} <= kinds


# --- labels ---------------------------------------------------------------------------------------

COMMON_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_object_carries_the_standard_labels(value_set: str) -> None:
    for obj in rendered(value_set).manifests():
        labels = obj["metadata"].get("labels", {})
        assert set(labels) >= COMMON_LABELS, (obj["kind"], COMMON_LABELS - set(labels))
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == RELEASE


def test_selectors_hold_only_labels_that_never_change() -> None:
    out = rendered("postgresql")
    selector = out.deployment()["spec"]["selector"]["matchLabels"]
    assert selector == {
        "app.kubernetes.io/name": "corral",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": "controller",
    }
    assert out.one("Service")["spec"]["selector"] == selector
    assert out.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    pod_labels = out.deployment()["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()


# --- the controller -------------------------------------------------------------------------------


def _args(out: Rendered) -> list[str]:
    args: list[str] = out.controller()["args"]
    return args


def _flag(out: Rendered, name: str) -> str | None:
    for arg in _args(out):
        if arg == name:
            return ""
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _env(out: Rendered) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in out.controller().get("env", [])}


def _mounts(out: Rendered) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in out.controller()["volumeMounts"]}


def _volumes(out: Rendered) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in out.deployment()["spec"]["template"]["spec"]["volumes"]}


def test_defaults_run_two_replicas_on_postgresql_with_a_pdb() -> None:
    out = rendered("postgresql")
    deployment = out.deployment()
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert out.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert "PersistentVolumeClaim" not in out.kinds()


def test_serve_gets_its_settings_as_flags_and_files() -> None:
    out = rendered("postgresql")
    assert _flag(out, "--config") == "/etc/corral/cluster.yaml"
    assert _mounts(out)["/etc/corral"] == "config"
    assert _volumes(out)["config"]["configMap"]["name"] == f"{FULLNAME}-config"
    assert _flag(out, "--ray-address") == "ray-head.ray.svc:6379"
    assert _flag(out, "--host") == "0.0.0.0"
    assert _flag(out, "--port") == "8470"
    assert _flag(out, "--log-dir") == "/srv/corral/logs"
    ports = out.controller()["ports"]
    assert ports == [{"name": "http", "containerPort": 8470, "protocol": "TCP"}]
    assert out.one("Service")["spec"]["ports"][0]["targetPort"] == "http"


def _serve_options() -> set[str]:
    from scheduler.cli.app import app

    command = typer.main.get_command(app)
    serve = command.commands["serve"]  # type: ignore[attr-defined]
    return {opt for param in serve.params for opt in (*param.opts, *param.secondary_opts)}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_rendered_flag_exists_in_corral_serve(value_set: str) -> None:
    known = _serve_options()
    flags = {a.split("=", 1)[0] for a in _args(rendered(value_set)) if a.startswith("--")}
    missing = flags - known
    assert not missing, f"`corral serve` has no {sorted(missing)}"


def test_kubernetes_topology_flags() -> None:
    assert _flag(rendered("postgresql"), "--kubernetes-topology") is None
    out = rendered("raycluster")
    assert _flag(out, "--kubernetes-topology") == ""
    assert _flag(out, "--rack-label") == "corral.dev/rack"
    assert _flag(out, "--lease-duration") == "15"
    assert out.deployment()["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert (
        rendered("postgresql").deployment()["spec"]["template"]["spec"]["automountServiceAccountToken"]
        is False
    )


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_security_defaults_are_restricted(value_set: str) -> None:
    out = rendered(value_set)
    pods = [out.deployment()["spec"]["template"]["spec"], out.one("Pod", "test-api")["spec"]]
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] in (True, False)
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert container["resources"]["requests"] and container["resources"]["limits"]
    assert out.deployment()["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    mounts, volumes = _mounts(out), _volumes(out)
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert _env(out)["HOME"] == "/tmp"
    for path in ("/srv/corral", "/tmp"):  # every writable path is a volume
        assert path in mounts


def test_probes() -> None:
    controller = rendered("postgresql").controller()
    assert controller["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert controller["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_ray_pods_are_non_root_without_privilege_escalation() -> None:
    ray = rendered("raycluster").one("RayCluster")
    templates = [ray["spec"]["headGroupSpec"]["template"]] + [
        g["template"] for g in ray["spec"]["workerGroupSpecs"]
    ]
    for template in templates:
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


# --- RBAC -----------------------------------------------------------------------------------------

SECRET_RULE = {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [ADMIN_SECRET], "verbs": ["get"]}
PODS_RULE = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
NODES_RULE = {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}


def _all_rules(out: Rendered) -> list[dict[str, Any]]:
    return [rule for kind in ("Role", "ClusterRole") for role in out.of_kind(kind) for rule in role["rules"]]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rbac_has_no_wildcards_and_no_foreign_secrets(value_set: str) -> None:
    out = rendered(value_set)
    own = ci_values(value_set).get("auth", {}).get("existingSecret") or ADMIN_SECRET
    for rule in _all_rules(out):
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), rule
        assert not {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind"} & set(
            rule["verbs"]
        ), rule
        if "secrets" in rule["resources"]:
            assert rule == {**SECRET_RULE, "resourceNames": [own]}
    for role in out.of_kind("ClusterRole"):
        assert all(r["resources"] == ["nodes"] for r in role["rules"]), role


def test_rbac_rules_without_kubernetes_topology() -> None:
    out = rendered("postgresql")
    assert out.one("Role")["rules"] == [SECRET_RULE]
    assert out.of_kind("ClusterRole") == [] and out.of_kind("ClusterRoleBinding") == []
    binding = out.one("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": out.one("Role")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": out.one("ServiceAccount")["metadata"]["name"],
            "namespace": NAMESPACE,
        }
    ]
    assert out.deployment()["spec"]["template"]["spec"]["serviceAccountName"] == FULLNAME


def test_rbac_rules_with_kubernetes_topology() -> None:
    out = rendered("raycluster")
    assert out.one("Role")["rules"] == [SECRET_RULE, PODS_RULE]
    assert out.one("Role")["metadata"]["namespace"] == NAMESPACE
    assert out.one("ClusterRole")["rules"] == [NODES_RULE]
    binding = out.one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == out.one("ClusterRole")["metadata"]["name"]
    assert binding["subjects"][0]["namespace"] == NAMESPACE


def test_rbac_create_false_renders_no_roles() -> None:
    out = render(merged(ci_values("raycluster"), {"rbac": {"create": False}}))
    assert not {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} & out.kinds()


# --- secrets: store URL and admin token -----------------------------------------------------------


def test_postgresql_url_comes_from_the_secret_as_a_file() -> None:
    out = rendered("raycluster")  # key DATABASE_URL
    assert _flag(out, "--db-url-file") == "/var/run/secrets/corral/db/url"
    assert "CORRAL_DB_URL" not in _env(out)
    volume = _volumes(out)[_mounts(out)["/var/run/secrets/corral/db"]]
    assert volume["secret"]["secretName"] == "corral-db"
    assert volume["secret"]["items"] == [{"key": "DATABASE_URL", "path": "url"}]
    assert _flag(out, "--db") is None


def test_sqlite_store_on_a_claim_with_one_replica_and_recreate() -> None:
    out = rendered("sqlite")
    deployment = out.deployment()
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    claim = out.one("PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert _volumes(out)[_mounts(out)["/var/lib/corral/store"]]["persistentVolumeClaim"] == {
        "claimName": claim["metadata"]["name"]
    }
    assert _env(out)["CORRAL_DB_URL"] == "sqlite:////var/lib/corral/store/corral.db"
    assert _flag(out, "--db-url-file") is None
    assert "PodDisruptionBudget" not in out.kinds()


def test_sqlite_with_an_existing_claim_creates_none() -> None:
    out = render(merged(ci_values("sqlite"), {"store": {"sqlite": {"existingClaim": "my-claim"}}}))
    assert "PersistentVolumeClaim" not in out.kinds()
    assert _volumes(out)["store"]["persistentVolumeClaim"] == {"claimName": "my-claim"}


def test_generated_admin_token_secret() -> None:
    out = rendered("postgresql")
    secret = out.one("Secret", "admin-token")
    assert secret["metadata"]["name"] == ADMIN_SECRET
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert re.fullmatch(r"corral_[A-Za-z0-9]{43}", token)
    assert _flag(out, "--admin-token-file") == "/var/run/secrets/corral/admin/token"
    assert _volumes(out)["admin-token"]["secret"]["secretName"] == ADMIN_SECRET
    assert "CORRAL_ADMIN_TOKEN" not in _env(out)
    assert set(DEFAULTS["auth"]) == {"existingSecret", "key"}, "a token must never be a value"


def test_existing_admin_secret_is_used_and_none_is_generated() -> None:
    out = rendered("existing-auth")
    assert out.of_kind("Secret") == []
    volume = _volumes(out)["admin-token"]["secret"]
    assert volume["secretName"] == "corral-admin"
    assert volume["items"] == [{"key": "admin-token", "path": "token"}]
    test_pod = out.one("Pod", "test-api")
    assert test_pod["spec"]["volumes"][0]["secret"]["secretName"] == "corral-admin"
    assert out.one("Role")["rules"][0]["resourceNames"] == ["corral-admin"]
    assert out.deployment()["spec"]["replicas"] == 3


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_no_token_or_password_in_configmaps_args_or_env(value_set: str) -> None:
    out = rendered(value_set)
    secrets = [
        base64.b64decode(value).decode()
        for s in out.of_kind("Secret")
        for value in s.get("data", {}).values()
    ]
    plain = [json.dumps(cm) for cm in out.of_kind("ConfigMap")]
    plain.append(json.dumps(_args(out)))
    plain.append(json.dumps(_env(out)))
    plain.append(json.dumps(out.of_kind("RayCluster")))
    for text in plain:
        for secret in secrets:
            assert secret not in text
        tokens = [t for t in re.findall(r"corral_[A-Za-z0-9_-]{40,}", text) if t != t.lower()]
        assert not tokens, "a Corral token in plain text (metric names are lower case)"
        assert not re.search(r"postgres(ql)?://", text), "a database URL in plain text"
        assert not re.search(r"(?i)password\s*[:=]", text)


# --- the cluster file -----------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_cluster_file_parses_with_corrals_own_parser(value_set: str) -> None:
    values = merged(yaml.safe_load((CHART / "values.yaml").read_text()), ci_values(value_set))
    config = values["config"]
    text = rendered(value_set).one("ConfigMap", "-config")["data"]["cluster.yaml"]
    live = parse_live_config(text, source="cluster.yaml")
    got = {q.name: q for q in live.cluster.queues}
    assert list(got) == [q["name"] for q in config["queues"]]
    for queue in config["queues"]:
        parsed = got[queue["name"]]
        assert parsed.cohort == queue.get("cohort")
        assert dict(parsed.quota) == (queue.get("quota") or {})
        assert parsed.borrowing_limit == queue.get("borrowing_limit")
        assert parsed.lending_limit == queue.get("lending_limit")
        assert parsed.weight == queue.get("weight", 1.0)
        assert parsed.default_time_limit_s == queue.get("default_time_limit_s")
    classes = {(p.name, p.value, p.preempts_lower) for p in live.cluster.priority_classes}
    assert classes == {
        (p["name"], p["value"], p.get("preempts_lower", True)) for p in config["priorityClasses"]
    }
    nodes = sum(r["nodes"] for region in config["regions"] for r in region["racks"])
    assert len(live.cluster.nodes) == nodes
    for knob, value in config["policy"].items():
        got_value = getattr(live.policy, knob)
        assert (list(got_value) if isinstance(got_value, tuple) else got_value) == value
    assert live.cluster.default_time_limit_s == config["defaultTimeLimitS"]


def test_config_change_rolls_the_pods() -> None:
    before = rendered("postgresql").deployment()["spec"]["template"]["metadata"]["annotations"]
    values = merged(
        ci_values("postgresql"), {"config": {"queues": [{"name": "default", "quota": {"H100": 8}}]}}
    )
    after = render(values).deployment()["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", before["checksum/config"])
    assert before["checksum/config"] != after["checksum/config"]
    again = render(ci_values("postgresql")).deployment()["spec"]["template"]["metadata"]["annotations"]
    assert again["checksum/config"] == before["checksum/config"]


def test_pod_annotations_and_scheduling_values_reach_the_pods() -> None:
    values = merged(
        ci_values("postgresql"),
        {
            "podAnnotations": {"example.com/owner": "ml-platform"},
            "nodeSelector": {"pool": "system"},
            "tolerations": [{"key": "system", "operator": "Exists", "effect": "NoSchedule"}],
            "imagePullSecrets": [{"name": "regcred"}],
            "image": {"tag": "1.2.3", "pullPolicy": "Always"},
            "service": {"type": "NodePort", "port": 9000},
        },
    )
    out = render(values)
    template = out.deployment()["spec"]["template"]
    assert template["metadata"]["annotations"]["example.com/owner"] == "ml-platform"
    assert "checksum/config" in template["metadata"]["annotations"]
    assert template["spec"]["nodeSelector"] == {"pool": "system"}
    assert template["spec"]["tolerations"][0]["key"] == "system"
    assert template["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert out.controller()["image"] == "ghcr.io/corral-scheduler/corral:1.2.3"
    assert out.controller()["imagePullPolicy"] == "Always"
    assert out.one("Service")["spec"]["type"] == "NodePort"
    assert out.one("Service")["spec"]["ports"][0]["port"] == 9000


# --- refused values -------------------------------------------------------------------------------


def _refusal(values: dict[str, Any] | None) -> str:
    with pytest.raises(helm.HelmError) as caught:
        render_raw(values)
    return str(caught.value)


def test_sqlite_with_two_replicas_is_refused_by_the_schema() -> None:
    message = _refusal(merged(ci_values("sqlite"), {"controller": {"replicas": 2}}))
    assert "/controller/replicas" in message and "maximum" in message


def test_sqlite_with_two_replicas_is_refused_by_the_template_too(tmp_path: Path) -> None:
    """Without the schema (helm --skip-schema-validation), the template still refuses, in one line.
    (helm lint cannot show it: in lint mode Helm only logs `fail`.)"""
    copy = tmp_path / "corral"
    shutil.copytree(CHART, copy)  # follows the files/ links
    (copy / "values.schema.json").unlink()
    with helm.Chart.load(str(copy)) as chart:
        assert chart.schema is None
        with pytest.raises(helm.HelmRenderError) as caught:
            render_raw(merged(ci_values("sqlite"), {"controller": {"replicas": 2}}), chart)
    message = str(caught.value)
    assert "store.type=sqlite supports controller.replicas=1 only (got 2)" in message
    assert "\n" not in message.strip()


def test_the_bare_defaults_ask_for_the_store_secret_and_the_ray_address() -> None:
    message = _refusal(None)
    assert "/store/postgresql/existingSecret" in message
    assert "/ray/address" in message


def test_token_auth_for_ray_needs_its_secret() -> None:
    message = _refusal(merged(ci_values("postgresql"), {"ray": {"auth": {"mode": "token"}}}))
    assert "/ray/auth/existingSecret" in message


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"queues": [{"name": "q", "quota": {"H100": 8}, "colour": "red"}]}, "/config/queues/0"),
        ({"queues": [{"name": "q", "quota": {"H100": -1}}]}, "/config/queues/0/quota/H100"),
        ({"queues": [{"name": "q", "borrowing_limit": -4}]}, "/config/queues/0/borrowing_limit"),
        ({"queues": [{"name": "my queue"}]}, "/config/queues/0/name"),
        ({"queues": [{"name": "q", "weight": 0}]}, "/config/queues/0/weight"),
        ({"priorityClasses": [{"name": "urgent"}]}, "/config/priorityClasses/0"),
        ({"priorityClasses": [{"name": "low", "value": 0, "preempt": False}]}, "/config/priorityClasses/0"),
        ({"policy": {"agingSPerPoint": 3}}, "/config/policy"),
        ({"policy": {"name": "round-robin"}}, "/config/policy/name"),
        ({"regions": []}, "/config/regions"),
        (
            {
                "regions": [
                    {"name": "a", "racks": [{"name": "r", "nodes": 1, "gpu_type": "any", "gpus_per_node": 8}]}
                ]
            },
            "/config/regions/0/racks/0/gpu_type",
        ),
        (
            {
                "regions": [
                    {
                        "name": "a",
                        "racks": [{"name": "r", "nodes": 0, "gpu_type": "H100", "gpus_per_node": 8}],
                    }
                ]
            },
            "/config/regions/0/racks/0/nodes",
        ),
        (
            {
                "regions": [
                    {
                        "name": "a/b",
                        "racks": [{"name": "r", "nodes": 1, "gpu_type": "H100", "gpus_per_node": 8}],
                    }
                ]
            },
            "/config/regions/0/name",
        ),
        ({"defaultTimeLimitS": -1}, "/config/defaultTimeLimitS"),
    ],
)
def test_bad_config_is_refused_naming_the_field(override: dict[str, Any], named: str) -> None:
    message = _refusal(merged(ci_values("postgresql"), {"config": override}))
    assert f"at '{named}'" in message, message
    extra = {"colour", "preempt", "agingSPerPoint"} & set(json.dumps(override).replace('"', " ").split())
    for key in extra:
        assert key in message


def test_unknown_top_level_value_is_refused() -> None:
    assert "controler" in _refusal(merged(ci_values("postgresql"), {"controler": {"replicas": 3}}))


def test_values_the_schema_cannot_check_are_checked_by_corral_at_start() -> None:
    """A quota for a GPU type no rack has passes the schema; Corral's parser is the second line."""
    values = merged(ci_values("postgresql"), {"config": {"queues": [{"name": "q", "quota": {"B200": 8}}]}})
    text = render(values).one("ConfigMap", "-config")["data"]["cluster.yaml"]
    live = parse_live_config(text, source="cluster.yaml")
    assert live.cluster.queues[0].quota == {"B200": 8}


# --- Ray ------------------------------------------------------------------------------------------


def test_bundled_raycluster_has_a_worker_group_per_rack_with_corral_labels() -> None:
    out = rendered("raycluster")
    ray = out.one("RayCluster")
    groups = {g["groupName"]: g for g in ray["spec"]["workerGroupSpecs"]}
    assert list(groups) == ["cn-north-r1", "cn-north-r2", "cn-east-r1"]
    expected = {
        "cn-north-r1": ("cn-north", "cn-north-1", "r1", "H100", 4, 8),
        "cn-north-r2": ("cn-north", "cn-north-1", "r2", "A100", 2, 4),
        "cn-east-r1": ("cn-east", "cn-east-a", "r1", "H100", 3, 8),
    }
    for name, (region, zone, rack, gpu, nodes, gpus) in expected.items():
        group = groups[name]
        assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == nodes
        labels = group["labels"]
        assert labels["corral.dev/region"] == region
        assert labels["corral.dev/zone"] == zone
        assert labels["corral.dev/rack"] == rack
        assert labels["corral.dev/gpu-type"] == gpu
        container = group["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == str(gpus)
        assert container["resources"]["requests"]["nvidia.com/gpu"] == str(gpus)
    assert groups["cn-north-r1"]["labels"]["corral.dev/nvlink-domain"] == "d0"
    assert "corral.dev/nvlink-domain" not in groups["cn-east-r1"]["labels"]
    assert groups["cn-north-r2"]["labels"]["corral.dev/pool"] == "spot"
    assert groups["cn-north-r1"]["template"]["spec"]["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"
    }
    assert "nodeSelector" not in groups["cn-north-r2"]["template"]["spec"]
    assert (
        groups["cn-north-r1"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
        == "1024Gi"
    )


def test_ray_labels_are_the_ones_corral_reads() -> None:
    from scheduler.backends import ray_nodes

    group = rendered("raycluster").one("RayCluster")["spec"]["workerGroupSpecs"][0]
    read = {ray_nodes.LABEL_REGION, ray_nodes.LABEL_ZONE, ray_nodes.LABEL_RACK, ray_nodes.LABEL_GPU_TYPE}
    assert read <= set(group["labels"])


def test_controller_uses_the_bundled_head_service() -> None:
    out = rendered("raycluster")
    name = out.one("RayCluster")["metadata"]["name"]
    assert _flag(out, "--ray-address") == f"{name}-head-svc.{NAMESPACE}.svc:6379"
    values = merged(ci_values("raycluster"), {"ray": {"address": "elsewhere:6379"}})
    assert _flag(render(values), "--ray-address") == f"{name}-head-svc.{NAMESPACE}.svc:6379"
    assert "RayCluster" not in rendered("postgresql").kinds()


def test_ray_token_auth_is_a_mounted_file() -> None:
    out = rendered("sqlite")
    env = _env(out)
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN_PATH"] == "/var/run/secrets/corral/ray/token"
    assert "RAY_AUTH_TOKEN" not in env
    assert _volumes(out)["ray-token"]["secret"]["secretName"] == "ray-token"
    bundled = render(
        merged(ci_values("raycluster"), {"ray": {"auth": {"mode": "token", "existingSecret": "rt"}}})
    )
    assert bundled.one("RayCluster")["spec"]["authOptions"] == {"mode": "token", "secretName": "rt"}


def test_shared_claim_is_mounted_in_the_controller_and_every_ray_pod() -> None:
    out = rendered("raycluster")
    assert _volumes(out)["shared"] == {
        "name": "shared",
        "persistentVolumeClaim": {"claimName": "corral-shared"},
    }
    ray = out.one("RayCluster")["spec"]
    for template in [ray["headGroupSpec"]["template"]] + [g["template"] for g in ray["workerGroupSpecs"]]:
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["shared"]["persistentVolumeClaim"] == {"claimName": "corral-shared"}
        assert {"name": "shared", "mountPath": "/srv/corral"} in template["spec"]["containers"][0][
            "volumeMounts"
        ]


# --- monitoring -----------------------------------------------------------------------------------


def test_monitoring_is_opt_in() -> None:
    kinds = rendered("postgresql").kinds()
    assert not {"ServiceMonitor", "PrometheusRule"} & kinds
    assert [cm["metadata"]["name"] for cm in rendered("postgresql").of_kind("ConfigMap")] == [
        f"{FULLNAME}-config"
    ]


def test_prometheus_rule_is_deploy_rules_unchanged() -> None:
    rule = rendered("monitoring").one("PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    if "{{ $labels" in RULES.read_text():  # Prometheus' templates, not Helm's
        assert "{{ $labels" in json.dumps(rule)


def test_dashboard_configmap_is_deploy_dashboard_unchanged() -> None:
    cm = rendered("monitoring").one("ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "GPU Scheduler"}
    assert json.loads(cm["data"]["corral-overview.json"]) == json.loads(DASHBOARD.read_text())


def test_service_monitor_scrapes_metrics_as_job_corral() -> None:
    out = rendered("monitoring")
    monitor = out.one("ServiceMonitor")
    service = out.one("Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    # The alert rules select job="corral": the job label comes from this Service label.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "corral"
    assert 'job="corral"' in RULES.read_text()


def test_chart_files_are_links_to_deploy_not_copies() -> None:
    for name, target in (("corral-rules.yaml", RULES), ("corral-overview.json", DASHBOARD)):
        link = CHART / "files" / name
        assert link.is_symlink(), f"{link} must link to {target} (one source of truth)"
        assert link.resolve() == target.resolve()


def test_packaged_chart_carries_the_deploy_files(tmp_path: Path) -> None:
    """`helm package` follows the links: the archive renders the same rules and dashboard."""
    archive = helm.package(str(CHART), destination=str(tmp_path))
    with helm.Chart.load_archive(Path(archive).read_bytes()) as chart:
        out = Rendered(render_raw(ci_values("monitoring"), chart))
    assert out.one("PrometheusRule")["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    dashboard = out.one("ConfigMap", "-dashboard")["data"]["corral-overview.json"]
    assert json.loads(dashboard) == json.loads(DASHBOARD.read_text())


# --- helm test, NOTES -----------------------------------------------------------------------------


def test_helm_test_pod_checks_healthz_and_whoami_with_the_token() -> None:
    pod = rendered("postgresql").one("Pod", "test-api")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    script = pod["spec"]["containers"][0]["command"][-1]
    compile(script, "test-api", "exec")  # valid Python
    assert "/healthz" in script and "/v1/whoami" in script and "Bearer" in script
    assert f"http://{FULLNAME}.{NAMESPACE}.svc:8470" in script
    assert {"name": "admin-token", "mountPath": "/var/run/secrets/corral/admin", "readOnly": True} in pod[
        "spec"
    ]["containers"][0]["volumeMounts"]


def test_notes_tell_how_to_reach_the_api_and_read_the_token() -> None:
    notes = rendered("postgresql").notes
    assert f"kubectl -n {NAMESPACE} port-forward svc/{FULLNAME} 8470:8470" in notes
    assert f"get secret {ADMIN_SECRET} -o jsonpath='{{.data.token}}' | base64 -d" in notes
    assert f"helm test {RELEASE}" in notes
    assert "ServiceMonitor" in rendered("monitoring").notes


# --- values.yaml, schema and README agree ---------------------------------------------------------


def _leaf_paths(values: Any, prefix: str = "") -> set[str]:
    if isinstance(values, dict) and values:
        return set().union(*(_leaf_paths(v, f"{prefix}.{k}" if prefix else k) for k, v in values.items()))
    return {prefix}


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    props = schema.get("properties")
    if not props or schema.get("additionalProperties") is not False:
        return {prefix}
    return set().union(*(_schema_paths(s, f"{prefix}.{k}" if prefix else k) for k, s in props.items()))


SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
OPEN_MAPS = {"config.policy"}  # the schema lists every knob; values.yaml leaves them to Corral


def test_every_default_value_is_in_the_schema_and_every_schema_value_has_a_default() -> None:
    schema_paths = _schema_paths(SCHEMA) - {"global"}
    for path in _leaf_paths(DEFAULTS):
        known = any(path == p or path.startswith(p + ".") or p.startswith(path + ".") for p in schema_paths)
        assert known, f"{path} is not in the schema"
    for path in schema_paths:
        if not path.startswith(tuple(p + "." for p in OPEN_MAPS)):
            assert _has_default(DEFAULTS, path.split(".")), f"{path} has no default in values.yaml"


def _has_default(values: Any, keys: list[str]) -> bool:
    for key in keys:
        if not isinstance(values, dict) or key not in values:
            return False
        values = values[key]
    return True


def test_required_value_names_exist() -> None:
    flat = _leaf_paths(DEFAULTS)
    for name in (
        "controller.replicas",
        "store.type",
        "store.postgresql.existingSecret",
        "ray.address",
        "rayCluster.enabled",
        "monitoring.serviceMonitor.enabled",
        "monitoring.prometheusRule.enabled",
        "monitoring.grafanaDashboard.enabled",
        "auth.existingSecret",
        "config.regions",
        "config.queues",
        "config.priorityClasses",
        "config.policy",
        "kubernetes.topology.enabled",
        "kubernetes.topology.rackLabel",
        "image.repository",
        "image.tag",
        "image.pullPolicy",
        "imagePullSecrets",
        "nodeSelector",
        "tolerations",
        "affinity",
        "podAnnotations",
        "service.type",
        "service.port",
    ):
        assert name in flat, name


def test_schema_policy_knobs_are_policyconfigs_fields() -> None:
    from scheduler.policy.config import PolicyConfig

    knobs = SCHEMA["properties"]["config"]["properties"]["policy"]["properties"]
    assert set(knobs) == set(PolicyConfig.model_fields)


def test_schema_queue_keys_are_the_cluster_files() -> None:
    from scheduler.config import cluster_file

    config = SCHEMA["properties"]["config"]["properties"]
    assert set(config["queues"]["items"]["properties"]) == cluster_file._QUEUE_KEYS
    assert set(config["priorityClasses"]["items"]["properties"]) == cluster_file._PC_KEYS
    region = config["regions"]["items"]
    assert set(region["properties"]) == cluster_file._REGION_KEYS
    assert set(region["properties"]["racks"]["items"]["properties"]) == cluster_file._RACK_KEYS


def test_every_value_is_documented() -> None:
    paths = {p for p in _schema_paths(SCHEMA) if not p.startswith(tuple(m + "." for m in OPEN_MAPS))}
    paths = (paths | OPEN_MAPS) - {"global"}
    readme = (CHART / "README.md").read_text()
    documented = _documented_keys((CHART / "values.yaml").read_text().splitlines())
    for path in sorted(paths):
        assert f"`{path}`" in readme, f"helm/corral/README.md does not describe {path}"
        assert documented.get(path), f"values.yaml: {path} has no '# --' comment above it"


def _documented_keys(lines: list[str]) -> dict[str, bool]:
    """Dotted path of every mapping key in values.yaml → whether a '# --' comment block is above it."""
    out: dict[str, bool] = {}
    stack: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        found = re.match(r"^( *)([A-Za-z][\w]*):(\s|$)", line)
        if not found:
            continue
        indent, key = len(found.group(1)), found.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --"):
            j -= 1
        out[".".join(k for _, k in stack)] = j >= 0 and lines[j].strip().startswith("# --")
    return out
