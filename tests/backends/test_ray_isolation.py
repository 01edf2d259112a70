"""Job isolation in the Ray backend, on a real local Ray cluster (2 nodes × 8 logical GPUs): who a
job runs as, its own directories, its processes ending with it, its log cap, and what Ray says is
free and healthy."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import ray

from scheduler.backends.base import EventKind
from scheduler.backends.job_log import truncation_line
from scheduler.backends.job_user import ensure_job_user
from scheduler.backends.ray_backend import LABEL_NODE, RayBackend
from scheduler.clock import WallClock
from scheduler.local.ray_cluster import ROOT_ENV
from scheduler.model.cluster import Node
from scheduler.model.job import Job, JobSpec
from tests.raycluster import Events, RayTestCluster, alloc, job, start_cluster, wait_until

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.timeout(180)]

LOG_CAP = 16 * 1024


@dataclass
class Env:
    cluster: RayTestCluster
    backend: RayBackend
    events: Events
    user: str | None  # who jobs run as: the job user when we are root (CI is), else ourselves


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    nodes = [Node(id=n, region="r1", rack=f"r1/rack-{n}", gpu_type="H100") for n in ("n1", "n2")]
    cluster = start_cluster(nodes, "iso")
    backend = None
    try:
        cluster.root.chmod(0o711)  # the job user must reach its own directories below it
        user = ensure_job_user()
        backend = RayBackend(
            cluster.address,
            cluster.root / "logs" / "jobs",
            WallClock(),
            start_timeout_s=5.0,
            job_user=user,
            log_cap_bytes=LOG_CAP,
        )
        yield Env(cluster, backend, Events(backend), user)
    finally:
        if backend is not None:
            backend.close()
        cluster.stop()


def run_to_end(env: Env, spec_job: Job, *nodes: str) -> int | None:
    """Run a job to its end; its exit code."""
    env.backend.start(spec_job, alloc(*(nodes or ("n1",))))
    exited = env.events.wait_job(spec_job.id, EventKind.EXITED)
    env.backend.release(spec_job.id, spec_job.restart_count)
    return exited.exit_code


def log_of(env: Env, job_id: str) -> str:
    return env.backend.log_path(job_id).read_text()


def sleepers(seconds: str) -> list[psutil.Process]:
    """Processes running `sleep <seconds>`, zombies included (a zombie was not reaped)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.cmdline() == ["sleep", seconds] or (
                proc.status() == psutil.STATUS_ZOMBIE and proc.name() == "sleep"
            ):
                found.append(proc)
        except psutil.Error:
            pass
    return found


def test_a_job_runs_as_the_job_user_and_cannot_read_the_controllers_files(env: Env) -> None:
    secret = env.cluster.root / "secret"
    secret.write_text("top secret\n")
    secret.chmod(0o600)
    assert secret.read_text() == "top secret\n"  # the controller can
    cmd = f'id -u; id -g; id -G; echo "home=$HOME user=$USER logname=$LOGNAME"; cat {secret}'
    code, log = run_to_end(env, job("whoami", cmd)), log_of(env, "whoami")
    lines = log.splitlines()
    if env.user is None:  # not root: jobs run as whoever runs Corral
        assert lines[1] == str(os.getuid()) and code == 0
        return
    entry = pwd.getpwnam(env.user)
    assert entry.pw_uid != 0
    assert lines[1:4] == [str(entry.pw_uid), str(entry.pw_gid), str(entry.pw_gid)]  # no extra groups
    home = env.backend.work_dir(job("whoami", "true"))
    assert lines[4] == f"home={home} user={env.user} logname={env.user}"
    assert code == 1 and "Permission denied" in log and "top secret" not in log


def test_a_job_without_a_working_dir_runs_in_its_own_private_one(env: Env) -> None:
    ckpt = "$CORRAL_CHECKPOINT_DIR"
    cmd = f'pwd; stat -c "%a %u" .; echo saved > "{ckpt}/ckpt"; stat -c "%a %u" "{ckpt}"'
    spec_job = job("ownwd", cmd)
    code, log = run_to_end(env, spec_job), log_of(env, "ownwd")
    uid = pwd.getpwnam(env.user).pw_uid if env.user else os.getuid()
    work, checkpoint = env.backend.work_dir(spec_job), env.backend.checkpoint_dir(spec_job)
    assert code == 0, log
    assert work == env.backend.work_root / "ownwd" and env.backend.log_dir not in work.parents
    assert log.splitlines()[1:] == [str(work), f"700 {uid}", f"700 {uid}"]
    assert (checkpoint / "ckpt").read_text() == "saved\n"
    assert (checkpoint / "ckpt").stat().st_uid == uid


def test_a_working_dir_the_job_user_cannot_reach_fails_the_job_saying_so(env: Env) -> None:
    private = env.cluster.root / "private"
    private.mkdir(mode=0o700)
    spec_job = Job(id="noreach", spec=JobSpec(command=["true"], working_dir=str(private)))
    env.backend.start(spec_job, alloc("n2"))
    exited = env.events.wait_job("noreach", EventKind.EXITED)
    env.backend.release("noreach", 0)
    if env.user is None:  # not root: the directory is ours
        assert exited.exit_code == 0
        return
    assert (exited.exit_code, exited.node) == (126, "n2")
    assert exited.message == (
        f"working directory {private} is not accessible to user {env.user} on node n2; "
        "make it and its parent directories searchable by that user"
    )
    assert f"corral: {exited.message}" in log_of(env, "noreach")


def test_a_stopped_job_leaves_no_setsid_or_orphaned_process(env: Env) -> None:
    # 1221 leaves the job's process group; 1222 is orphaned too (its parent exits at once), so
    # without the worker as subreaper it would be re-parented to init and escape.
    spec_job = job("escape", "setsid sleep 1221 & (setsid sleep 1222 &); echo ready; sleep 300")
    env.backend.start(spec_job, alloc("n2"))
    env.events.wait_job("escape", EventKind.STARTED)
    wait_until(lambda: "ready" in env.backend.log_path("escape").read_text() and len(sleepers("1222")) == 1)
    wait_until(lambda: len(sleepers("1221")) == 1)
    adopter = sleepers("1222")[0].parent()
    assert adopter is not None and adopter.pid != 1  # adopted by the worker (its subreaper), not init
    assert adopter.environ().get("CORRAL_JOB_ID") is None and adopter.name() != "sh"
    env.backend.stop(spec_job, 2.0)
    env.events.wait_job("escape", EventKind.STOPPED)
    assert sleepers("1221") == [] and sleepers("1222") == []


def test_what_a_rank_leaves_behind_is_killed_when_it_exits(env: Env) -> None:
    t0 = time.monotonic()
    code = run_to_end(env, job("leftover", "(setsid sleep 1223 &); setsid sleep 1224 & echo bye"))
    assert code == 0 and time.monotonic() - t0 < 10
    assert sleepers("1223") == [] and sleepers("1224") == []  # before release() killed the actors


def test_the_log_stops_at_the_cap_and_every_rank_keeps_draining(env: Env) -> None:
    cmd = 'yes "rank $RANK writes a line of output" | head -n 3000; echo "rank $RANK done"'
    t0 = time.monotonic()
    code, log = run_to_end(env, job("chatty", cmd, nodes=2), "n1", "n2"), log_of(env, "chatty")
    assert code == 0 and time.monotonic() - t0 < 15  # 2 × 100 KB through a 16 KiB cap
    data = env.backend.log_path("chatty").read_bytes()
    marker = truncation_line(LOG_CAP)
    assert marker == b"corral: log truncated at 16384 bytes (the log cap); output after this is discarded\n"
    assert len(data) == LOG_CAP + len(marker) and data.endswith(marker) and data.count(marker) == 1
    assert log.startswith("=== corral: attempt 0 on n1,n2 at ")
    assert "[rank 0] rank 0 writes a line of output" in log or "[rank 1] rank 1 writes" in log


def test_a_log_that_cannot_be_written_never_blocks_the_job(env: Env) -> None:
    env.backend.log_path("fulldisk").symlink_to("/dev/full")  # every write: ENOSPC (never read it)
    t0 = time.monotonic()
    code = run_to_end(env, job("fulldisk", "yes corral | head -c 2000000; echo done"))
    assert code == 0 and time.monotonic() - t0 < 15  # 2 MB through a 64 KiB pipe: drained


FOREIGN_DRIVER = textwrap.dedent(
    """
    import sys, time, ray
    from ray.util.placement_group import placement_group
    ray.init(address=sys.argv[1], namespace="someone-else", log_to_driver=False)
    pg = placement_group([{"GPU": 4}], bundle_label_selector=[{sys.argv[2]: "n2"}])
    print("ready" if pg.wait(timeout_seconds=30) else "timeout", flush=True)
    time.sleep(300)
    """
)


@contextmanager
def foreign_placement_group(env: Env) -> Iterator[None]:
    """4 of n2's GPUs held by another Ray driver's placement group, until the driver is killed."""
    driver = subprocess.Popen(
        [sys.executable, "-c", FOREIGN_DRIVER, env.cluster.address, LABEL_NODE],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    try:
        assert driver.stdout is not None and driver.stdout.readline().strip() == "ready"
        yield
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)


def test_available_gpus_sees_a_foreign_placement_group_and_a_start_blames_the_full_node(env: Env) -> None:
    wait_until(lambda: env.backend.available_gpus() == {"n1": 8.0, "n2": 8.0}, timeout=10)
    with foreign_placement_group(env):
        t0 = time.monotonic()
        wait_until(lambda: env.backend.available_gpus().get("n2") == 4.0, timeout=5)
        seen_s = time.monotonic() - t0
        assert env.backend.available_gpus()["n1"] == 8.0
        env.backend.start(job("full", "true", gpus=8), alloc("n2", gpus=8))
        failed = env.events.wait_job("full", EventKind.START_FAILED, timeout=15)
        assert failed.node == "n2"
        assert failed.message == (
            "placement group corral-full-0 not ready within 5 s "
            "(bundles for node n2 unplaced: 4 of 8 GPUs free)"
        )
    wait_until(lambda: env.backend.available_gpus().get("n2") == 8.0, timeout=30)  # its job ended
    assert seen_s < 3, seen_s


def test_read_available_gpus_asks_ray_now_not_the_view_the_refresher_left_behind(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle that places jobs checks them against Ray's view read now: with the refresher frozen
    (as a CPU-starved one lags by seconds on a loaded host), a placement group another driver made
    is still seen. In CI a job was once placed on GPUs another driver had just taken."""
    wait_until(lambda: env.backend.available_gpus() == {"n1": 8.0, "n2": 8.0}, timeout=10)
    monkeypatch.setattr(env.backend, "_refresh_free_gpus", lambda: None)
    with foreign_placement_group(env):
        assert env.backend.available_gpus()["n2"] == 8.0  # the cached view, stale
        # Ray's raylets report a change to the GCS within about 100 ms
        wait_until(lambda: env.backend.read_available_gpus().get("n2") == 4.0, timeout=3)
        assert env.backend.available_gpus()["n2"] == 4.0  # the read refreshed it
    wait_until(lambda: env.backend.read_available_gpus().get("n2") == 8.0, timeout=30)


def _gcs_server(root: Path) -> psutil.Process:
    for proc in psutil.process_iter():
        try:
            if proc.name() == "gcs_server" and proc.environ().get(ROOT_ENV) == str(root.resolve()):
                return proc
        except psutil.Error:
            pass
    raise LookupError(f"no gcs_server under {root}")


def test_health_is_ok_and_says_when_the_gcs_does_not_answer(env: Env) -> None:
    # Last in this module: it freezes the cluster's GCS for a moment.
    assert env.backend.health() == "ok"
    gcs = _gcs_server(env.cluster.root)
    gcs.suspend()
    try:
        t0 = time.monotonic()
        problem = env.backend.health()
        took = time.monotonic() - t0
    finally:
        gcs.resume()
    assert problem.startswith(f"Ray GCS at {env.cluster.address} did not answer within 1 s: "), problem
    assert "\n" not in problem and took < 3, took
    wait_until(lambda: env.backend.health() == "ok", timeout=10)
    assert ray.is_initialized()
