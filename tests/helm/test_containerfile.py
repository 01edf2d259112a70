"""deploy/Containerfile read as instructions (no container engine runs here, so nothing is built):
pinned bases, the stages the chart uses, non-root users that match the chart's securityContext,
`corral serve` as the controller's entrypoint, and the same Ray and Python on both sides."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import ray
import yaml

from tests.helm.chart import CHART, ROOT

CONTAINERFILE = ROOT / "deploy" / "Containerfile"


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, op: str) -> str | None:
        found = [arg for o, arg in self.instructions if o == op]
        return found[-1] if found else None

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def _parse() -> tuple[dict[str, str], dict[str, Stage]]:
    """Global ARG defaults and the stages by name, with line continuations joined."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            found = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest.strip(), re.IGNORECASE)
            assert found, f"every stage is named: FROM {rest}"
            current = Stage(found.group(1), found.group(2))
            stages[current.name] = current
        elif current is None:
            assert op == "ARG", f"only ARG may come before the first FROM, not {op}"
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        else:
            current.instructions.append((op, rest.strip()))
    return args, stages


ARGS, STAGES = _parse()


def _base(stage: str) -> str:
    base = STAGES[stage].base
    return re.sub(r"\$\{(\w+)\}", lambda m: ARGS[m.group(1)], base)


def test_stages_the_chart_uses_exist_and_controller_is_the_default() -> None:
    assert {"build", "controller", "ray-worker"} <= set(STAGES)
    assert list(STAGES)[-1] == "controller"  # `build` without --target gives the controller


def test_base_images_are_pinned() -> None:
    for stage in STAGES.values():
        if stage.base in STAGES:  # FROM an earlier stage
            continue
        image = _base(stage.name)
        pinned = re.search(r"@sha256:[0-9a-f]{64}$", image) or re.search(r":\d+\.\d+\.\d+[-\w.]*$", image)
        assert pinned, f"{stage.name}: {image} is not pinned to an exact version or digest"
        assert ":latest" not in image
    assert re.fullmatch(r"docker\.io/library/python:3\.11\.\d+-slim[-\w]*", _base("controller"))
    assert re.fullmatch(r"docker\.io/rayproject/ray:2\.60\.\d+-py311(-gpu)?", _base("ray-worker"))


def test_controller_runs_corral_serve_as_uid_10001() -> None:
    controller = STAGES["controller"]
    assert json.loads(controller.last("ENTRYPOINT") or "null") == ["corral", "serve"]
    user = controller.last("USER") or ""
    assert user.split(":")[0] == "10001"
    assert any("--uid 10001" in run for run in controller.all("RUN"))
    assert controller.last("EXPOSE") == "8470"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["controller"]["podSecurityContext"]["runAsUser"] == 10001
    assert values["controller"]["podSecurityContext"]["runAsNonRoot"] is True


def test_ray_worker_is_non_root_with_corral_installed() -> None:
    worker = STAGES["ray-worker"]
    user = (worker.last("USER") or "root").split(":")[0]
    assert user not in ("root", "0")
    assert any("pip install" in run and "/tmp/corral-src" in run for run in worker.all("RUN"))
    assert user == "1000"
    chart_ray = (CHART / "templates" / "ray" / "raycluster.yaml").read_text()
    assert '"runAsUser" 1000' in chart_ray  # the chart's Ray pods run as this same user


def test_build_installs_corral_from_files_that_exist() -> None:
    for stage in STAGES.values():
        for copy in stage.all("COPY"):
            if "--from=" in copy:
                continue
            sources = [p for p in copy.split()[:-1] if not p.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"{stage.name}: COPY {source}: not in the repository"
    assert any("pip install" in run for run in STAGES["build"].all("RUN"))


def test_ray_version_agrees_everywhere() -> None:
    version = ARGS["RAY_VERSION"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["rayCluster"]["rayVersion"] == version
    assert version in _base("ray-worker")
    assert ray.__version__.split(".")[:2] == version.split(".")[:2]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"ray\[default\]==2\.60\.\*"', pyproject)
