"""Render helm/corral with Helm's own Go SDK (helm-python-sdk; no helm binary) and check the objects
offline: core kinds with kubernetes-validate, custom resources against their CRDs' schemas."""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "corral"
CI_VALUES = CHART / "ci"
CRDS = Path(__file__).resolve().parent / "crds"
RELEASE = "corral"
NAMESPACE = "gpu-sched"

# The SDK logs one INFO line per symlinked file it loads (files/ links to deploy/): expected here.
logging.getLogger("helm_python").setLevel(logging.WARNING)
helm.disable_logging()


def ci_values(name: str) -> dict[str, Any]:
    """The value set helm/corral/ci/<name>-values.yaml (chart-testing's convention)."""
    loaded: dict[str, Any] = yaml.safe_load((CI_VALUES / f"{name}-values.yaml").read_text()) or {}
    return loaded


def value_set_names() -> list[str]:
    return sorted(p.name.removesuffix("-values.yaml") for p in CI_VALUES.glob("*-values.yaml"))


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` deep-merged onto a copy of `base` (what `-f a.yaml -f b.yaml` gives)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@functools.cache
def _chart() -> helm.Chart:
    return helm.Chart.load(str(CHART))


def render_raw(values: dict[str, Any] | None, chart: helm.Chart | None = None) -> dict[str, str]:
    """Template path → rendered text, as `helm template` (an install, offline) gives it."""
    return (chart or _chart()).render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


class Rendered:
    """The objects one value set renders, by kind and name, plus NOTES.txt."""

    def __init__(self, raw: dict[str, str]) -> None:
        self.raw = raw
        self.notes = next((text for path, text in raw.items() if path.endswith("NOTES.txt")), "")
        self.objects: list[dict[str, Any]] = []
        for path, text in sorted(raw.items()):
            if path.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    doc.setdefault("__template__", path)
                    self.objects.append(doc)

    def manifests(self) -> Iterator[dict[str, Any]]:
        """The objects without the test's bookkeeping key."""
        for obj in self.objects:
            yield {k: v for k, v in obj.items() if k != "__template__"}

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.manifests() if o["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} named *{name_suffix}, got {len(found)}"
        return found[0]

    def kinds(self) -> set[str]:
        return {o["kind"] for o in self.objects}

    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    def controller(self) -> dict[str, Any]:
        containers: list[dict[str, Any]] = self.deployment()["spec"]["template"]["spec"]["containers"]
        assert [c["name"] for c in containers] == ["controller"]
        return containers[0]


def render(values: dict[str, Any] | None) -> Rendered:
    return Rendered(render_raw(values))


# --- custom resources against their CRDs ----------------------------------------------------------


def _api_server_semantics(schema: Any) -> Any:
    """A CRD's structural schema as plain JSON Schema that is as strict as an API server with strict
    field validation: unknown fields are refused unless x-kubernetes-preserve-unknown-fields says
    otherwise, and x-kubernetes-int-or-string accepts an integer or a string."""
    if isinstance(schema, list):
        return [_api_server_semantics(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _api_server_semantics(v) for k, v in schema.items()}
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("additionalProperties", None)
    elif "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    """(apiVersion, kind) → a validator of the whole object, for every served version of the CRDs."""
    validators: dict[tuple[str, str], jsonschema.Draft7Validator] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", True):
                continue
            schema = _api_server_semantics(version["schema"]["openAPIV3Schema"])
            # The API server checks metadata itself; the CRD only says "object".
            schema["properties"]["metadata"] = {"type": "object"}
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators
