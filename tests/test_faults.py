"""Fault injection is inert by default and refuses names it does not know."""

from __future__ import annotations

import pytest

from scheduler import faults


def test_no_faults_unless_asked() -> None:
    assert faults.active({}) == {}
    assert faults.active({"CORRAL_FAULTS": ""}) == {}


def test_faults_parse_with_and_without_values() -> None:
    assert faults.parse("unplaceable_node=n1") == {"unplaceable_node": "n1"}
    assert faults.parse("unplaceable_node=n1,") == {"unplaceable_node": "n1"}


def test_an_unknown_fault_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown fault 'crash_everything'"):
        faults.parse("crash_everything")
