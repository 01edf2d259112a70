"""The policy config: validated, frozen knobs (files and env are read by scheduler/config)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from scheduler.policy.config import POLICY_NAMES, PolicyConfig
from scheduler.policy.usage import DecayedUsage


def test_defaults() -> None:
    cfg = PolicyConfig()
    assert cfg.name == "corral" and cfg.backfill and cfg.preemption
    assert POLICY_NAMES == ("corral", "fifo", "sjf", "las")


@pytest.mark.parametrize(
    "bad", [{"name": "round-robin"}, {"scan_depth": 0}, {"aging_s_per_point": 0}, {"no_such_knob": 1}]
)
def test_invalid_values_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PolicyConfig(**bad)  # type: ignore[arg-type]


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        PolicyConfig().scan_depth = 3  # type: ignore[misc]


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
