"""`corral check` against a real local install: `corral up` (a Ray cluster of two 4-GPU nodes, the
controller, a SQLite store), running jobs, then the CLI as a subprocess that finds the store and Ray
from CORRAL_HOME. It is clean on a healthy install; it names a Corral placement group made by hand
that the store does not expect, and a GPU a plain Ray actor holds; it names both jobs of a GPU held
twice after the store is corrupted with raw SQL; and an acknowledged id that is not in the store."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.xdist_group("check-live"), pytest.mark.timeout(300)]
REPO = Path(__file__).resolve().parents[2]


class Local:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.cwd = Path(tempfile.mkdtemp(prefix="corral-check-", dir="/tmp"))
        self.cwd.chmod(0o755)  # as root, jobs run as an unprivileged user in the submit directory
        self.env = {
            **os.environ,
            "CORRAL_HOME": str(home),
            "RAY_AUTH_MODE": "disabled",
            "PYTHONPATH": str(REPO),
        }
        for name in ("CORRAL_API_URL", "CORRAL_TOKEN", "CORRAL_DB_URL", "CORRAL_RAY_ADDRESS"):
            self.env.pop(name, None)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def ok(self, *args: str) -> str:
        proc = self.run(*args)
        assert proc.returncode == 0, f"corral {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def check(self, *args: str) -> tuple[int, dict[str, Any]]:
        proc = self.run("check", "-o", "json", *args)
        assert proc.returncode in (0, 1), proc.stderr
        return proc.returncode, dict(json.loads(proc.stdout))

    @property
    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.home / "local.json").read_text()))

    def ray(self, code: str) -> str:
        """Run `code` in a separate Ray driver in Corral's namespace."""
        address = self.state["ray_address"]
        script = f"import ray; ray.init(address={address!r}, namespace='corral', log_to_driver=False)\n{code}"
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=90, env=self.env
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    def sql(self, statement: str, *params: object) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.home / "corral.db", timeout=10) as db:
            return db.execute(statement, params).fetchall()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    c = Local(tmp_path_factory.mktemp("corral-check-home"))
    c.ok("up", "--nodes", "2", "--gpus-per-node", "4", "--racks", "1", "--regions", "cn-north")
    try:
        yield c
    finally:
        c.run("down", timeout=120)
        shutil.rmtree(c.cwd, ignore_errors=True)


@pytest.fixture(scope="module")
def jobs(local: Local) -> dict[str, str]:
    """Three running jobs: one pinned to the region, one on any node, a 2-node gang over both nodes."""
    ids = {
        "pinned": local.ok("submit", "-q", "--gpus", "2", "--region", "cn-north", "--", "sleep", "600"),
        "any": local.ok("submit", "-q", "--gpus", "1", "--", "sleep", "600"),
        "gang": local.ok("submit", "-q", "-N", "2", "--gpus-per-node", "1", "--", "sleep", "600"),
    }
    ids = {k: v.strip() for k, v in ids.items()}
    deadline = time.monotonic() + 60
    while True:
        states = {k: json.loads(local.ok("describe", v, "-o", "json"))["state"] for k, v in ids.items()}
        if all(s == "RUNNING" for s in states.values()):
            return ids
        assert time.monotonic() < deadline, states
        time.sleep(0.5)


def test_a_healthy_install_with_running_jobs_is_clean(local: Local, jobs: dict[str, str]) -> None:
    t0 = time.monotonic()
    code, report = local.check()
    assert (code, report["ok"], report["violations"]) == (0, True, []), report
    assert report["ray_checked"] and report["active_jobs"] == 3
    print(
        f"corral check on a healthy install: {time.monotonic() - t0:.1f} s, {report['readings']} reading(s)"
    )


def test_a_corral_placement_group_the_store_does_not_expect_is_reported(
    local: Local, jobs: dict[str, str]
) -> None:
    local.ray(
        "from ray.util.placement_group import placement_group\n"
        "pg = placement_group([{'GPU': 1}], name='corral-999-0', lifetime='detached')\n"
        "ray.get(pg.ready(), timeout=60)"
    )
    try:
        code, report = local.check("--settle", "1")
        assert code == 1 and not report["ok"]
        stray = [v for v in report["violations"] if v["kind"] == "unexpected_placement_group"]
        assert [(v["name"], v["jobs"]) for v in stray] == [("corral-999-0", ["999"])], report
        # the GPU it holds is in use in Ray but allocated to no job
        assert any(
            v["kind"] == "node_mismatch" and "held outside" in v["message"] for v in report["violations"]
        )
        assert report["readings"] == 2
    finally:
        local.ray(
            "from ray.util.placement_group import get_placement_group, remove_placement_group\n"
            "remove_placement_group(get_placement_group('corral-999-0'))"
        )


def test_a_gpu_held_by_a_plain_ray_actor_is_reported_as_outside_any_placement_group(
    local: Local, jobs: dict[str, str]
) -> None:
    """Corral holds GPUs only through placement groups: a GPU in use that no group holds is named
    as such (with the count), not as a mismatch of Corral's own accounting."""
    local.ray(
        "@ray.remote(num_gpus=1, num_cpus=0)\n"
        "class Holder:\n"
        "    def ping(self): return 1\n"
        "h = Holder.options(name='gpu-holder', namespace='outsider', lifetime='detached').remote()\n"
        "ray.get(h.ping.remote(), timeout=60)"
    )
    try:
        code, report = local.check("--settle", "1")
        assert code == 1 and not report["ok"], report
        assert [(v["kind"], v["gpus"]) for v in report["violations"]] == [
            ("gpus_outside_placement_groups", 1.0)
        ], report
        assert "no placement group holds them" in report["violations"][0]["message"]
    finally:
        local.ray("ray.kill(ray.get_actor('gpu-holder', namespace='outsider'))")
    deadline = time.monotonic() + 30
    while local.check("--settle", "1")[0] != 0:
        assert time.monotonic() < deadline, "the GPU was not freed after the actor was killed"
        time.sleep(1.0)


def test_a_gpu_held_twice_in_a_corrupted_store_is_reported_with_both_jobs(
    local: Local, jobs: dict[str, str]
) -> None:
    victim, other = jobs["any"], jobs["pinned"]
    (saved,) = local.sql("SELECT allocation FROM jobs WHERE id = ?", int(victim))
    local.sql(
        "UPDATE jobs SET allocation = (SELECT allocation FROM jobs WHERE id = ?) WHERE id = ?",
        int(other),
        int(victim),
    )
    try:
        proc = local.run("check", "--settle", "1")  # the table: one line per violation, exit 1
        assert proc.returncode == 1, proc.stderr
        lines = [line for line in proc.stdout.splitlines() if line.startswith("gpu_held_twice")]
        first, second = sorted([victim, other], key=int)
        assert len(lines) == 2 and all(f"held by jobs {first}, {second}" in line for line in lines), (
            proc.stdout
        )
        assert "violation(s)" in proc.stderr
    finally:
        local.sql("UPDATE jobs SET allocation = ? WHERE id = ?", saved[0], int(victim))
    assert local.check("--settle", "1")[0] == 0


def test_an_acknowledged_job_missing_from_the_store_is_reported(
    local: Local, jobs: dict[str, str], tmp_path: Path
) -> None:
    acked = tmp_path / "acked.txt"
    acked.write_text("\n".join([*jobs.values(), "123456"]) + "\n")
    code, report = local.check("--no-ray", "--acknowledged", str(acked))
    assert code == 1 and [(v["kind"], v["jobs"]) for v in report["violations"]] == [
        ("missing_job", ["123456"])
    ]
    assert not report["ray_checked"]
