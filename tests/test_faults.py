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


def test_a_crash_point_kills_the_process_at_its_nth_arrival() -> None:
    import signal
    import subprocess
    import sys

    code = (
        "from scheduler import faults\n"
        "for i in range(1, 4):\n"
        "    print(i, flush=True)\n"
        "    faults.crash_point('after_commit')\n"
        "    faults.crash_point('mid_preemption')\n"  # not armed: never crashes
    )
    env = {"CORRAL_FAULTS": "crash_at=after_commit@2", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == -signal.SIGKILL and run.stdout.split() == ["1", "2"], run
    calm = subprocess.run([sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin"}, capture_output=True)
    assert calm.returncode == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [("nowhere", "unknown crash point 'nowhere'"), ("after_commit@0", "N in POINT@N must be a whole number")],
)
def test_a_bad_crash_point_is_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        faults.parse(f"crash_at={value}")
    assert faults.armed("after_commit", {}) is False


def test_a_faults_file_arms_a_running_process_once(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "faults"
    env = {"CORRAL_FAULTS_FILE": str(path)}
    assert not faults.armed("after_commit", env)  # no file: nothing armed
    path.write_text("crash_at=mid_preemption")
    assert faults.armed("mid_preemption", env) and not faults.armed("after_commit", env)
    assert faults.active(env) == {"crash_at": "mid_preemption"}
