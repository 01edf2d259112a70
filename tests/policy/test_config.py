"""The policy config: defaults < YAML file < CORRAL_POLICY_* environment < explicit overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from scheduler.policy.config import POLICY_NAMES, PolicyConfig, PolicyConfigError
from scheduler.policy.usage import DecayedUsage


def test_defaults() -> None:
    cfg = PolicyConfig()
    assert cfg.name == "corral" and cfg.backfill and cfg.preemption
    assert POLICY_NAMES == ("corral", "fifo", "sjf", "las")


def test_file_env_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("policy:\n  name: sjf\n  scan_depth: 7\n  aging_s_per_point: 10\n")
    assert PolicyConfig.load(path).scan_depth == 7
    monkeypatch.setenv("CORRAL_POLICY_SCAN_DEPTH", "9")
    cfg = PolicyConfig.load(path)
    assert (cfg.name, cfg.scan_depth, cfg.aging_s_per_point) == ("sjf", 9, 10.0)
    assert PolicyConfig.load(path, scan_depth=11).scan_depth == 11


def test_whole_document_is_the_policy(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: fifo\n")
    assert PolicyConfig.load(path).name == "fifo"


@pytest.mark.parametrize(
    "bad", [{"name": "round-robin"}, {"scan_depth": 0}, {"aging_s_per_point": 0}, {"no_such_knob": 1}]
)
def test_invalid_values_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PolicyConfig(**bad)  # type: ignore[arg-type]


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        PolicyConfig().scan_depth = 3  # type: ignore[misc]


def test_a_non_mapping_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        PolicyConfig.load(path)
    path.write_text("policy: 5\n")
    with pytest.raises(PolicyConfigError, match="must be a mapping of knob: value"):
        PolicyConfig.load(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scan_depth: [1\n", "p.yaml:2: not valid YAML"),
        ("scan_depth: 3\n\tbackfill: true\n", "p.yaml:2: not valid YAML"),
        ("policy:\n  scan_dept: 3\n", "p.yaml: unknown policy knob 'scan_dept'; the knobs are name, "),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PolicyConfigError) as err:
        PolicyConfig.load(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(PolicyConfigError, match=r"nope.yaml: cannot read \(No such file or directory\)"):
        PolicyConfig.load(tmp_path / "nope.yaml")


# --- decayed usage (fair share's history) -------------------------------------------------------------
def test_decayed_usage_halves_every_half_life() -> None:
    u = DecayedUsage(half_life_s=100.0, value=80.0)
    assert u.value_at(100.0) == pytest.approx(40.0)
    assert u.value_at(200.0) == pytest.approx(20.0)
    assert u.value_at(0.0) == 80.0


def test_decayed_usage_integrates_gpus_held() -> None:
    import math

    u = DecayedUsage(half_life_s=1e12)  # no decay to speak of: plain GPU-seconds
    u.change(0.0, 8)
    u.change(100.0, -8)
    assert u.value_at(100.0) == pytest.approx(800.0, rel=1e-6)
    # Held for ever, usage tends to gpus / λ.
    forever = DecayedUsage(half_life_s=50.0)
    forever.change(0.0, 4)
    assert forever.value_at(1e6) == pytest.approx(4 * 50.0 / math.log(2))
