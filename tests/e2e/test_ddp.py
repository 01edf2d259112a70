"""End to end with real PyTorch: examples/jobs/ddp_train.py as a 2-node DDP gang (gloo, env://)
is preempted, checkpoints on SIGTERM with both ranks stopping at the same step, is requeued and
resumes; both ranks end with the same parameters, and the same as a run that was never stopped.

Real CLI → real API → controller → a real local Ray cluster (the shared session of conftest.py).
Needs the torch extra: pip install -e '.[torch]'.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from pathlib import Path

import pytest

from scheduler.backends.job_user import ensure_job_user
from tests.e2e.conftest import REPO, TERMINAL, Corral

pytestmark = [pytest.mark.xdist_group("e2e"), pytest.mark.timeout(600)]

SCRIPT = "examples/jobs/ddp_train.py"
STEPS = 120  # 24 s at least: under load, the preemption still comes long before the end
STEP_S = 0.2


def _kinds(job: dict[str, object]) -> list[str]:
    return [str(e["kind"]) for e in job["history"]]  # type: ignore[union-attr, index]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reference_run(ckpt_dir: Path) -> list[subprocess.Popen[str]]:
    """The same training as two local processes that are never stopped (no pauses between steps)."""
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    argv = [sys.executable, str(REPO / SCRIPT), "--steps", str(STEPS), "--step-s", "0"]
    return [
        subprocess.Popen(
            [*argv, "--checkpoint-dir", str(ckpt_dir)],
            env={**env, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]


def _job_python() -> tuple[str, list[str]]:
    """A Python with this environment's torch that the job's ranks can run, and the --env it needs.

    As root, Corral runs jobs as its unprivileged job user, who may not reach this interpreter (a
    pyenv under /root): the system's Python of the same version then runs with this environment's
    site-packages on PYTHONPATH."""
    if os.geteuid() != 0:
        return sys.executable, []
    user = ensure_job_user()
    site = sysconfig.get_paths()
    pythonpath = os.pathsep.join(dict.fromkeys([site["purelib"], site["platlib"]]))
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    why = []
    for python, env in ((sys.executable, {}), (system, {"PYTHONPATH": pythonpath})):
        try:
            probe = subprocess.run(
                [python, "-c", "import torch.distributed"],
                env={**os.environ, **env},
                user=user,
                cwd="/",
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except OSError as exc:
            why.append(f"{python}: {exc.strerror}")
            continue
        if probe.returncode == 0:
            return python, [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
        why.append(f"{python}: {(probe.stderr.strip().splitlines() or [f'exit {probe.returncode}'])[-1]}")
    pytest.fail(f"the job user {user} cannot import torch with {' or '.join(why)}")


def _wait_for_log(corral: Corral, job_id: str, pattern: str, count: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    log = ""
    while time.monotonic() < deadline:
        log = corral.logs(job_id)
        if len(re.findall(pattern, log, re.MULTILINE)) >= count:
            return log
        time.sleep(0.2)
    raise AssertionError(
        f"no {count} lines matching {pattern!r} in {timeout:g} s: {corral.describe(job_id)}\n{log}"
    )


def test_ddp_gang_checkpoints_on_sigterm_and_resumes_with_ranks_in_agreement(corral: Corral) -> None:
    if importlib.util.find_spec("torch") is None:
        pytest.fail("PyTorch is not installed, and this test runs a real DDP job: pip install -e '.[torch]'")
    ckpt_dir = Path(f"/tmp/corral-e2e-ddp-{uuid.uuid4().hex[:12]}")  # the job user creates it
    python, python_env = _job_python()
    ref_dir = Path(f"/tmp/corral-e2e-ddp-ref-{uuid.uuid4().hex[:12]}")
    reference: list[subprocess.Popen[str]] = []
    jobs: list[str] = []
    try:
        low = corral.submit(
            "-N", "2", "--gpus-per-node", "8", "--region", "cn-north", "--priority", "low",
            "--grace", "30", "--checkpoint-dir", str(ckpt_dir), "--name", "ddp-train", *python_env,
            "--", python, SCRIPT, "--steps", str(STEPS), "--step-s", str(STEP_S),
        )  # fmt: skip
        jobs.append(low)
        # Both ranks joined the process group and made progress worth checkpointing.
        t0 = time.monotonic()
        _wait_for_log(corral, low, r"^\[rank [01]\] step 3 ", 2, timeout=120)
        print(f"step 3 after {time.monotonic() - t0:.1f} s")
        high = corral.submit(
            "-N", "1", "--gpus-per-node", "8", "--region", "cn-north", "--priority", "high",
            "--name", "urgent", "--", "sleep", "2",
        )  # fmt: skip
        jobs.append(high)
        corral.wait_for(high, ["RUNNING", "SUCCEEDED"], timeout=60)
        print(f"high running after {time.monotonic() - t0:.1f} s")
        assert "PREEMPTING" in _kinds(corral.describe(low)), corral.describe(low)["history"]
        reference = _reference_run(ref_dir)  # meanwhile: the same training, never stopped
        corral.wait_for(high, ["SUCCEEDED"], timeout=60)
        done = corral.wait_for(low, ["SUCCEEDED"], timeout=180)
        log = corral.run("logs", low).stdout
        print(f"low done after {time.monotonic() - t0:.1f} s")

        # The lifecycle: preempted, requeued once (back to PENDING), placed and started again.
        assert done["restart_count"] == 1 and done["preemption_count"] == 1, done
        kinds = [k for k in _kinds(done) if k in ("STARTED", "PREEMPTING", "REQUEUED", "SUCCEEDED")]
        assert kinds == ["STARTED", "PREEMPTING", "REQUEUED", "STARTED", "SUCCEEDED"], _kinds(done)

        # Both ranks agreed to stop at one step S; rank 0 saved the checkpoint there, once.
        stopped = dict(re.findall(r"^\[rank (\d)\] SIGTERM: stopping at step (\d+)$", log, re.MULTILINE))
        assert set(stopped) == {"0", "1"} and len(set(stopped.values())) == 1, log
        step = int(stopped["0"])
        assert 3 <= step < STEPS, log
        saves = re.findall(r"^\[rank (\d)\] checkpoint saved at step (\d+) \(SIGTERM\)$", log, re.MULTILINE)
        assert saves == [("0", str(step))], log
        at_stop = dict(
            re.findall(rf"^\[rank (\d)\] stopped at step {step}: params (\w+)$", log, re.MULTILINE)
        )
        assert set(at_stop) == {"0", "1"} and at_stop["0"] == at_stop["1"], log

        # Both ranks resumed from step S with exactly the parameters they stopped with.
        resumed = re.findall(
            r"^\[rank (\d)\] resumed from checkpoint at step (\d+): params (\w+)$", log, re.MULTILINE
        )
        assert sorted(resumed) == [("0", str(step), at_stop["0"]), ("1", str(step), at_stop["0"])], log
        steps_run = re.findall(r"^\[rank 0\] step (\d+) ", log, re.MULTILINE)
        assert [int(s) for s in steps_run] == list(range(1, STEPS + 1)), "a step was run twice or skipped"

        # Both ranks end with the same parameters: those of a run that was never stopped.
        final = dict(re.findall(rf"^\[rank (\d)\] done at step {STEPS}: params (\w+)$", log, re.MULTILINE))
        assert set(final) == {"0", "1"} and final["0"] == final["1"], log
        ref_out = [proc.communicate(timeout=120)[0] for proc in reference]
        assert [proc.returncode for proc in reference] == [0, 0], ref_out
        ref = [re.findall(rf"^done at step {STEPS}: params (\w+)$", out, re.MULTILINE) for out in ref_out]
        assert ref == [[final["0"]], [final["0"]]], (ref_out, log)
        assert (ckpt_dir / "ddp_train.pt").is_file()
        assert not [p.name for p in ckpt_dir.iterdir() if p.name.endswith(".tmp")]
    finally:
        for job_id in jobs:  # leave the cluster idle for the next test
            if corral.job(job_id)["state"] not in TERMINAL:
                corral.run("cancel", job_id, "--grace", "0", check=False)
        for proc in reference:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        shutil.rmtree(ref_dir, ignore_errors=True)
