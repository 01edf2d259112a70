"""One real local Corral for the end-to-end tests: `corral up` (Ray + controller + API), the CLI as
a subprocess, `corral down` at the end. All e2e tests share it and run in one xdist group."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from scheduler.client.errors import CorralError, ServerError, Unreachable
from scheduler.client.transport import Transport

HERE = Path(__file__).parent
REPO = HERE.parents[1]
# Names of the tokens the tests act with: `corral up` makes the admin's (kept in context.yaml), the
# admin makes the teams' with `corral token create`; Corral.run swaps a name for its token.
ADMIN = "admin"
TEAM_A = "team-a"
TEAM_B = "team-b"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMEOUT"}


def job_dir() -> Path:
    """Where the tests submit from: a copy of examples/jobs in a directory every user can enter.

    Corral runs as root in CI, so jobs run as the unprivileged job user, in the directory they were
    submitted from; the checkout itself may sit where that user cannot go (e.g. under /root).
    """
    where = Path(tempfile.mkdtemp(prefix="corral-e2e-jobs-", dir="/tmp"))
    where.chmod(0o755)
    shutil.copytree(REPO / "examples" / "jobs", where / "examples" / "jobs")
    for path in where.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return where


class Corral:
    """Drives the real `corral` CLI against one CORRAL_HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.cwd = job_dir()
        # COLUMNS=80: tables render as in the narrowest common terminal (CI's, too), not as piped
        self.env = {**os.environ, "CORRAL_HOME": str(home), "RAY_AUTH_MODE": "disabled", "COLUMNS": "80"}
        self.env.pop("CORRAL_API_URL", None)
        self.env.pop("CORRAL_TOKEN", None)
        self.tokens: dict[str, str] = {}
        self._answered = ""  # the API URL that last answered a GET of the tests

    def run(
        self, *args: str, token: str | None = None, timeout: float = 90, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if token is not None:
            env["CORRAL_TOKEN"] = self.tokens.get(token, token)
        proc = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", *args],
            env=env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"corral {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def submit(self, *args: str, token: str | None = None) -> str:
        return self.run("submit", "-q", *args, token=token).stdout.strip()

    def describe(self, job_id: str, token: str | None = None) -> dict[str, Any]:
        return dict(json.loads(self.run("describe", job_id, "-o", "json", token=token).stdout))

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        """GET `path` from the API through the client's own Transport (the CLI's replica failover
        and 429/503 retries), for polling loops; a restart in progress is waited out, any other
        error raises. A CLI process costs about a CPU-second to start, and polling through it kept
        one of CI's two cores busy while the controller and Ray under test waited for CPU."""
        context = yaml.safe_load((self.home / "context.yaml").read_text())
        urls = list(context.get("api_urls") or [context["api_url"]])
        urls.sort(key=lambda u: u != self._answered)  # a paused replica costs a timeout: start elsewhere
        bearer = self.tokens.get(token, token) if token is not None else context["token"]
        transport = Transport(urls, bearer, timeout_s=15.0, retries=2)
        last = ""
        try:
            for _ in range(60):  # no replica answers yet: a failover or a restart in progress
                try:
                    response = transport.request("GET", path)
                except Unreachable as exc:
                    last = str(exc)
                except ServerError as exc:
                    if exc.status != 502:
                        raise AssertionError(f"GET {path}: {exc}") from exc
                    last = str(exc)
                except CorralError as exc:
                    raise AssertionError(f"GET {path}: {exc}") from exc
                else:
                    self._answered = transport.url
                    return response
                time.sleep(0.5)
        finally:
            transport.close()
        raise AssertionError(f"GET {path}: no answer: {last}")

    def job(self, job_id: str, token: str | None = None) -> dict[str, Any]:
        """The job as `corral describe -o json` prints it (the same API answer), read over HTTP."""
        if not job_id.isdigit():  # an array task's label (12_4): the CLI resolves it
            return self.describe(job_id, token=token)
        return dict(self.get(f"/v1/jobs/{job_id}", token).json())

    def logs(self, job_id: str, token: str | None = None) -> str:
        """What `corral logs JOB` prints, read over HTTP (for polling loops)."""
        return self.get(f"/v1/jobs/{job_id}/logs", token).text

    def wait_for(
        self, job_id: str, states: Sequence[str], timeout: float = 60, token: str | None = None
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.job(job_id, token=token)
            if job["state"] in states:
                return job
            if job["state"] in TERMINAL:
                break
            time.sleep(0.3)
        raise AssertionError(
            f"job {job_id} is {job.get('state')}, not in {states}: {job.get('pending_reason')}"
        )

    def status(self) -> dict[str, Any]:
        return dict(json.loads(self.run("status", "-o", "json", check=False).stdout))


@pytest.fixture(scope="session")
def corral(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corral]:
    home = tmp_path_factory.mktemp("corral-home")
    c = Corral(home)
    try:  # `down` even when `up` fails or times out: it may have started Ray already
        c.run("up", "--config", str(HERE / "cluster.yaml"), timeout=180)
        context = home / "context.yaml"
        assert stat.S_IMODE(context.stat().st_mode) == 0o600
        c.tokens[ADMIN] = str(yaml.safe_load(context.read_text())["token"])
        for team in (TEAM_A, TEAM_B):  # made the way an admin makes them
            c.tokens[team] = c.run("token", "create", "--team", team).stdout.splitlines()[-1]
        # the admin token lives in context.yaml only: not in the controller's argv, nor in local.json
        state = json.loads((home / "local.json").read_text())
        assert c.tokens[ADMIN] not in " ".join(psutil.Process(state["pid"]).cmdline())
        assert c.tokens[ADMIN] not in (home / "local.json").read_text()
        yield c
    finally:
        c.run("down", check=False, timeout=120)
        shutil.rmtree(c.cwd, ignore_errors=True)


def placement_groups(address: str) -> list[str]:
    """Names of the placement groups Ray holds (not removed), read by a separate driver."""
    code = (
        f"import json, ray; ray.init(address={address!r}, log_to_driver=False);"
        "t = ray.util.placement_group_table();"
        "print(json.dumps(sorted(v['name'] for v in t.values() if v['state'] != 'REMOVED')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout.strip().splitlines()[-1]))
