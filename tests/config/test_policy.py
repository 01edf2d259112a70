"""Policy knobs from files and env: defaults < file < CORRAL_POLICY_* environment < overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.config import PolicyConfigError, load_policy, parse_live_config, policy_from_env
from scheduler.config.live import default_cluster_yaml


def test_file_env_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("policy:\n  name: sjf\n  scan_depth: 7\n  aging_s_per_point: 10\n")
    assert load_policy(path).scan_depth == 7
    monkeypatch.setenv("CORRAL_POLICY_SCAN_DEPTH", "9")
    cfg = load_policy(path)
    assert (cfg.name, cfg.scan_depth, cfg.aging_s_per_point) == ("sjf", 9, 10.0)
    assert load_policy(path, {"scan_depth": 11}).scan_depth == 11


def test_whole_document_is_the_policy(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: fifo\n")
    assert load_policy(path).name == "fifo"


def test_a_non_mapping_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        load_policy(path)
    path.write_text("policy: 5\n")
    with pytest.raises(PolicyConfigError, match="must be a mapping of knob: value"):
        load_policy(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scan_depth: [1\n", "p.yaml:2: not valid YAML"),
        ("scan_depth: 3\n\tbackfill: true\n", "p.yaml:2: not valid YAML"),
        ("policy:\n  scan_dept: 3\n", "p.yaml: scan_dept: unknown policy knob; the knobs are name, "),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PolicyConfigError) as err:
        load_policy(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(PolicyConfigError, match=r"nope.yaml: cannot read \(No such file or directory\)"):
        load_policy(tmp_path / "nope.yaml")


def test_the_live_cluster_file_follows_the_same_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    text = default_cluster_yaml().replace(
        "default_min_runtime_s: 10", "default_min_runtime_s: 10\n  scan_depth: 5"
    )
    assert parse_live_config(text).policy.scan_depth == 5
    monkeypatch.setenv("CORRAL_POLICY_SCAN_DEPTH", "9")  # the environment wins over the file, as in sim
    cfg = parse_live_config(text).policy
    assert (cfg.scan_depth, cfg.default_min_runtime_s) == (9, 10.0)


def test_env_values_are_typed_and_lists_are_json() -> None:
    env = {
        "CORRAL_POLICY_BACKFILL": "false",
        "CORRAL_POLICY_LAS_THRESHOLDS_GPU_S": "[100, 200]",
        "HOME": "/x",
    }
    assert policy_from_env(env) == {"backfill": "false", "las_thresholds_gpu_s": [100, 200]}
    cfg = load_policy(None, environ=env)
    assert cfg.backfill is False and cfg.las_thresholds_gpu_s == (100.0, 200.0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CORRAL_POLICY_SCAN_DEPT": "3"}, "CORRAL_POLICY_SCAN_DEPT: unknown policy knob; the knobs are"),
        (
            {"CORRAL_POLICY_SCAN_DEPTH": "0"},
            "CORRAL_POLICY_SCAN_DEPTH: Input should be greater than or equal to 1",
        ),
        ({"CORRAL_POLICY_LAS_THRESHOLDS_GPU_S": "[1,"}, "not a JSON list (write it like [3600, 36000])"),
    ],
)
def test_a_bad_env_knob_is_one_line_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(PolicyConfigError) as err:
        load_policy(None, environ=env)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_bad_knob_in_a_cluster_file_names_the_file_and_knob() -> None:
    text = default_cluster_yaml().replace("default_min_runtime_s: 10", "default_min_runtime_s: -1")
    with pytest.raises(ValueError, match=r"<string>: policy.default_min_runtime_s: Input should be greater"):
        parse_live_config(text)
