"""Invariant 4: a job whose submit() returned survives a kill -9 of the process that submitted it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from scheduler.store.store import Store

ROOT = Path(__file__).resolve().parents[2]
SEEN_BEFORE_KILL = 60


def test_submitted_jobs_survive_sigkill(db_url: str) -> None:
    Store.open(db_url).close()  # schema first, so that the child's time goes to submissions
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.store.submitter", db_url, "100000"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        acknowledged = [child.stdout.readline().strip() for _ in range(SEEN_BEFORE_KILL)]
        child.send_signal(signal.SIGKILL)  # mid-stream: the child is still submitting
        child.wait(30)
        acknowledged += [line.strip() for line in child.stdout if line.strip()]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL

    reopened = Store.open(db_url)
    try:
        found = {r.id for r in reopened.jobs()}
        assert set(acknowledged) <= found
        assert len(found) < 100000  # it really died mid-stream
        for job_id in acknowledged[-5:]:
            record = reopened.get(job_id)
            assert record is not None and record.job.spec.name.startswith("durable-")
    finally:
        reopened.close()
