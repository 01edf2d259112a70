"""RayBackend against a real local Ray cluster of simulated GPU nodes (3 nodes × 8 logical GPUs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import ray

from scheduler.backends.base import BackendEvent, EventKind
from scheduler.backends.job_user import ensure_job_user
from scheduler.backends.ray_backend import LABEL_NODE, RayBackend, pg_name
from scheduler.clock import WallClock
from scheduler.model.cluster import Node
from scheduler.model.job import Job, JobSpec
from tests.raycluster import Events, RayTestCluster, alloc, job, start_cluster, three_nodes, wait_until

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    cluster: RayTestCluster
    backend: RayBackend
    events: Events


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    cluster = start_cluster(three_nodes(), "be")
    backend = None
    try:
        # As in production: jobs run as the job user when we are root (CI is), so the job's own
        # directories under the cluster's root must be reachable by it (mkdtemp made the root 0700).
        cluster.root.chmod(0o711)
        backend = RayBackend(
            cluster.address,
            cluster.root / "logs",
            WallClock(),
            start_timeout_s=5.0,
            job_user=ensure_job_user(),
        )
        yield Env(cluster, backend, Events(backend))
    finally:
        if backend is not None:
            backend.close()
        cluster.stop()


def pg_state(job_id: str, attempt: int = 0) -> str | None:
    for info in ray.util.placement_group_table().values():
        if info["name"] == pg_name(job_id, attempt) and info["state"] != "REMOVED":
            return str(info["state"])
    return None


def job_processes(job_id: str) -> list[psutil.Process]:
    """Live processes of a job (its env carries CORRAL_JOB_ID)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("CORRAL_JOB_ID") == job_id and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def test_nodes_come_from_the_ray_cluster_with_their_labels(env: Env) -> None:
    nodes = {n.id: n for n in env.backend.nodes()}
    assert set(nodes) >= {"n1", "n2", "n3"}  # the GPU-less head is not a node
    n1, n3 = nodes["n1"], nodes["n3"]
    assert (n1.region, n1.zone, n1.rack, n1.nvlink_domain, n1.gpu_type, n1.gpus) == (
        "r-east",
        "z1",
        "r-east/rack-a",  # the cluster file's ids: region/rack[/domain], from "/"-free label values
        "r-east/rack-a/nv1",
        "H100",
        8,
    )
    assert (n3.region, n3.rack, n3.gpu_type, n3.nvlink_domain) == ("r-west", "r-west/rack-b", "A100", "")
    assert n3.labels[LABEL_NODE] == "n3"


def test_one_gpu_job_runs_logs_and_frees_its_placement_group(env: Env) -> None:
    t0 = time.monotonic()
    env.backend.start(job("echo1", "echo hello from corral"), alloc("n3"))
    env.events.wait_job("echo1", EventKind.STARTED)
    started_s = time.monotonic() - t0
    exited = env.events.wait_job("echo1", EventKind.EXITED)
    assert exited.exit_code == 0 and exited.attempt == 0
    log = env.backend.log_path("echo1").read_text()
    assert "=== corral: attempt 0 on n3 at " in log
    assert "hello from corral" in log
    # The attempt keeps its actors and placement group until the controller has recorded the end.
    assert pg_state("echo1") is not None and "echo1" in env.backend.attempts()
    env.backend.release("echo1", 0)
    wait_until(lambda: pg_state("echo1") is None, timeout=10)
    assert "echo1" not in env.backend.attempts()
    assert started_s < 5, started_s


def test_a_failing_command_reports_its_exit_code(env: Env) -> None:
    env.backend.start(job("fail1", "echo oops >&2; exit 3"), alloc("n1"))
    exited = env.events.wait_job("fail1", EventKind.EXITED)
    assert (exited.exit_code, exited.message, exited.node) == (3, "exited with code 3", "n1")
    assert "oops" in env.backend.log_path("fail1").read_text()
    assert env.events.of("fail1") == [EventKind.STARTED, EventKind.EXITED]
    env.backend.release("fail1", 0)
    wait_until(lambda: pg_state("fail1") is None, timeout=10)


def test_a_job_killed_by_a_signal_says_which(env: Env) -> None:
    env.backend.start(job("killed1", "kill -9 $$"), alloc("n2"))
    exited = env.events.wait_job("killed1", EventKind.EXITED)
    assert (exited.exit_code, exited.message) == (137, "killed by signal 9 (SIGKILL)")
    env.backend.release("killed1", 0)


def _start_fails(env: Env, spec_job: Job, *nodes: str) -> BackendEvent:
    """Start a job whose command cannot start: EXITED with the reason, never STARTED nor retried."""
    env.backend.start(spec_job, alloc(*(nodes or ("n1",))))
    exited = env.events.wait_job(spec_job.id, EventKind.EXITED)
    assert env.events.of(spec_job.id) == [EventKind.EXITED]
    env.backend.release(spec_job.id, 0)
    wait_until(lambda: pg_state(spec_job.id) is None, timeout=10)
    return exited


def test_a_command_that_does_not_exist_fails_the_job_with_127(env: Env) -> None:
    exited = _start_fails(env, Job(id="nobin", spec=JobSpec(command=["/no/such/binary", "--flag"])))
    assert (exited.exit_code, exited.message, exited.node) == (
        127,
        "command not found: /no/such/binary",
        "n1",
    )
    assert "corral: command not found: /no/such/binary\n" in env.backend.log_path("nobin").read_text()


def test_a_command_that_cannot_be_executed_fails_the_job_with_126(env: Env) -> None:
    script = env.cluster.root / "not-executable.sh"
    script.write_text("#!/bin/sh\necho never\n")
    script.chmod(0o644)  # no execute bit: not even root may exec it
    exited = _start_fails(env, Job(id="noexec", spec=JobSpec(command=[str(script)])))
    assert exited.exit_code == 126
    assert exited.message.startswith(f"permission denied: {script} ("), exited.message
    assert f"corral: {exited.message}" in env.backend.log_path("noexec").read_text()


def test_a_missing_working_directory_fails_the_job_with_126(env: Env) -> None:
    spec = JobSpec(command=["true"], working_dir="/no/such/dir")
    exited = _start_fails(env, Job(id="nodir", spec=spec), "n3")
    assert (exited.exit_code, exited.node) == (126, "n3")
    assert exited.message == "working directory /no/such/dir does not exist on node n3"
    assert "corral: working directory /no/such/dir does not exist on node n3" in (
        env.backend.log_path("nodir").read_text()
    )


def test_a_log_that_cannot_be_opened_fails_the_job_with_126(env: Env) -> None:
    env.backend.log_path("nolog").mkdir()  # a directory where the log file should be
    exited = _start_fails(env, job("nolog", "echo never"))
    assert exited.exit_code == 126
    assert exited.message == (
        f"cannot open the job's log file {env.backend.log_path('nolog')} on node n1: Is a directory"
    )


def test_a_gang_that_cannot_start_names_the_rank_and_stops_the_others(env: Env) -> None:
    exited = _start_fails(
        env, Job(id="nobin2", spec=JobSpec(command=["/no/such/binary"], nodes=2)), "n1", "n2"
    )
    assert (exited.exit_code, exited.node) == (127, "n1")
    assert exited.message == "rank 0 on node n1: command not found: /no/such/binary"
    log = env.backend.log_path("nobin2").read_text()
    assert "[rank 0] corral: command not found: /no/such/binary" in log
    assert "[rank 1] corral: command not found: /no/such/binary" in log
    assert job_processes("nobin2") == []


def test_one_failing_rank_ends_the_whole_gang(env: Env) -> None:
    cmd = 'if [ "$RANK" = 1 ]; then exit 7; fi; exec sleep 60'
    t0 = time.monotonic()
    env.backend.start(job("gangfail", cmd, nodes=2), alloc("n1", "n2"))
    exited = env.events.wait_job("gangfail", EventKind.EXITED)
    assert (exited.exit_code, exited.message, exited.node) == (
        7,
        "rank 1 on node n2: exited with code 7",
        "n2",
    )
    assert time.monotonic() - t0 < 15
    assert job_processes("gangfail") == []  # the other rank was stopped before EXITED
    env.backend.release("gangfail", 0)
    wait_until(lambda: pg_state("gangfail") is None, timeout=10)


def test_a_two_node_gang_gets_ranks_master_and_gpus(env: Env) -> None:
    cmd = "env > rank-$RANK.env; echo done"  # into the job's own working directory
    gang = job("gang1", cmd, nodes=2, gpus=8).model_copy(update={"restart_count": 2})
    env.backend.start(gang, alloc("n1", "n2", gpus=8))
    assert env.events.wait_job("gang1", EventKind.EXITED).exit_code == 0
    ranks = [_read_env(env.backend.work_dir(gang) / f"rank-{r}.env") for r in (0, 1)]
    for rank, (e, node) in enumerate(zip(ranks, ("n1", "n2"), strict=True)):
        assert e["RANK"] == e["NODE_RANK"] == str(rank)
        assert (e["WORLD_SIZE"], e["LOCAL_RANK"], e["LOCAL_WORLD_SIZE"]) == ("2", "0", "1")
        assert len(e["CUDA_VISIBLE_DEVICES"].split(",")) == 8
        assert e["CORRAL_NODE"] == node and e["CORRAL_GPUS_PER_NODE"] == "8"
        assert (e["CORRAL_JOB_ID"], e["CORRAL_ATTEMPT"], e["CORRAL_RESTART_COUNT"]) == ("gang1", "2", "2")
        assert e["CORRAL_CHECKPOINT_DIR"] == str(env.backend.checkpoint_dir(gang))
    assert ranks[0]["MASTER_ADDR"] == ranks[1]["MASTER_ADDR"]
    assert ranks[0]["MASTER_PORT"] == ranks[1]["MASTER_PORT"]
    log = env.backend.log_path("gang1").read_text()
    assert "=== corral: attempt 2 on n1,n2" in log
    assert "[rank 0] done" in log and "[rank 1] done" in log
    env.backend.release("gang1", 2)
    wait_until(lambda: pg_state("gang1", 2) is None, timeout=10)


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


# A shell script, not sys.executable: the job user may not reach this venv's interpreter.
CHECKPOINTER = (
    'trap \'printf "step 42" > "$CORRAL_CHECKPOINT_DIR/ckpt"; exit 0\' TERM; echo ready; sleep 120 & wait'
)


def _wait_ready(env: Env, job_id: str) -> None:
    env.events.wait_job(job_id, EventKind.STARTED)
    wait_until(lambda: "ready" in env.backend.log_path(job_id).read_text())


def test_stop_gives_the_job_its_grace_to_checkpoint(env: Env) -> None:
    spec_job = job("ckpt1", CHECKPOINTER)
    env.backend.start(spec_job, alloc("n2"))
    _wait_ready(env, "ckpt1")
    t0 = time.monotonic()
    env.backend.stop(spec_job, 10.0)
    env.events.wait_job("ckpt1", EventKind.STOPPED)
    assert time.monotonic() - t0 < 5  # it left on SIGTERM: no need to wait out the grace
    assert (env.backend.checkpoint_dir(spec_job) / "ckpt").read_text() == "step 42"
    assert pg_state("ckpt1") is None
    assert job_processes("ckpt1") == []
    assert EventKind.EXITED not in env.events.of("ckpt1")


def test_stop_sigkills_a_job_that_ignores_sigterm_after_the_grace(env: Env) -> None:
    stubborn = job("stubborn", "trap '' TERM; echo ready; sleep 120 & wait; sleep 120")
    env.backend.start(stubborn, alloc("n3"))
    _wait_ready(env, "stubborn")
    t0 = time.monotonic()
    env.backend.stop(stubborn, 1.0)
    env.events.wait_job("stubborn", EventKind.STOPPED)
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 4.0, elapsed
    assert job_processes("stubborn") == []
    assert pg_state("stubborn") is None


def test_stop_during_start_ends_with_stopped_only(env: Env) -> None:
    quick = job("quickstop", "sleep 60")
    env.backend.start(quick, alloc("n1"))
    env.backend.stop(quick, 0.0)
    env.events.wait_job("quickstop", EventKind.STOPPED)
    assert env.events.of("quickstop")[-1] is EventKind.STOPPED
    assert EventKind.EXITED not in env.events.of("quickstop")
    wait_until(lambda: job_processes("quickstop") == [])
    assert pg_state("quickstop") is None


def test_an_unplaceable_start_fails_after_the_timeout_blaming_the_node(env: Env) -> None:
    env.backend.start(job("noroom", "true", gpus=8), alloc("n1", "no-such-node", gpus=8))
    failed = env.events.wait_job("noroom", EventKind.START_FAILED, timeout=15)
    assert failed.node == "no-such-node"
    assert failed.message == (
        "placement group corral-noroom-0 not ready within 5 s "
        "(bundles for node no-such-node unplaced: not in the Ray cluster)"
    )
    assert pg_state("noroom") is None


@pytest.mark.parametrize("stop_meanwhile", [False, True], ids=["start-fails", "stopped-meanwhile"])
def test_a_worker_actor_that_dies_before_answering_fails_the_start_and_frees_the_group(
    env: Env, monkeypatch: pytest.MonkeyPatch, stop_meanwhile: bool
) -> None:
    """After its placement group is ready, a start can still fail: a rank's worker actor dies
    before it answers (its process killed, its node gone). The attempt must end (START_FAILED
    blaming that node, or STOPPED if a stop came meanwhile) and free its group, not stay STARTING
    until the controller's stop watchdog (found by the chaos suite: a preempted job stuck a minute)."""
    monkeypatch.setattr(env.backend, "_faults", {"rank_dies_on_node": "n2"})
    name = f"diesatlaunch{int(stop_meanwhile)}"
    doomed = job(name, "sleep 60", gpus=1, nodes=2)
    env.backend.start(doomed, alloc("n1", "n2", gpus=1))
    if stop_meanwhile:
        wait_until(lambda: pg_state(name) == "CREATED", 15)
        env.backend.stop(doomed, 1.0)
        env.events.wait_job(name, EventKind.STOPPED, timeout=20)
    else:
        failed = env.events.wait_job(name, EventKind.START_FAILED, timeout=20)
        assert failed.node == "n2" and "worker actor of rank 1 on node n2" in failed.message, failed
    wait_until(lambda: pg_state(name) is None, 10)
    assert not job_processes(name)


def test_a_dead_node_is_reported_for_itself_and_its_jobs(env: Env) -> None:
    extra = Node(id="n4", region="r-west", rack="r-west/rack-c", gpu_type="A100", gpus=4)
    env.cluster.cluster.add_node(extra)
    env.events.wait_for(lambda e: e.kind is EventKind.NODE_JOINED and e.node == "n4", 10, "n4 joined")
    doomed = job("doomed", "sleep 120", gpus=4)
    env.backend.start(doomed, alloc("n4", gpus=4))
    env.events.wait_job("doomed", EventKind.STARTED)
    t0 = time.monotonic()
    env.cluster.cluster.kill_node("n4")
    env.events.wait_for(lambda e: e.kind is EventKind.NODE_LOST and e.node == "n4" and not e.job_id, 15)
    detected_s = time.monotonic() - t0
    lost = env.events.wait_job("doomed", EventKind.NODE_LOST, timeout=15)
    assert lost.node == "n4" and lost.attempt == 0
    assert "n4" not in {n.id for n in env.backend.nodes()}
    env.backend.stop(doomed, 0.0)
    env.events.wait_job("doomed", EventKind.STOPPED, timeout=15)
    assert pg_state("doomed") is None
    assert detected_s < 10, detected_s  # ~4.5 s measured with the fast health-check config


DRIVER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from scheduler.backends.base import EventKind
    from scheduler.backends.ray_backend import RayBackend
    from scheduler.clock import WallClock
    from scheduler.model.job import Job, JobSpec
    from scheduler.model.plan import Allocation, NodeAllocation

    backend = RayBackend(sys.argv[1], Path(sys.argv[2]), WallClock())
    jobs = {"adopt-run": "sleep 4; exit 5", "adopt-done": "sleep 2; exit 4", "orphan": "sleep 120"}
    for job_id, cmd in jobs.items():
        alloc = Allocation(nodes=(NodeAllocation(node="n3", gpus=(0,)),))
        backend.start(Job(id=job_id, spec=JobSpec(command=cmd)), alloc)
    started = set()
    deadline = time.monotonic() + 30
    while started != set(jobs) and time.monotonic() < deadline:
        started |= {e.job_id for e in backend.poll() if e.kind is EventKind.STARTED}
        time.sleep(0.05)
    print("ready" if started == set(jobs) else "timeout", flush=True)
    time.sleep(300)
    """
)


def test_a_new_controller_adopts_running_jobs_and_removes_orphans(env: Env) -> None:
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, env.cluster.address, str(env.backend.log_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"},
    )
    try:
        assert driver.stdout is not None
        assert driver.stdout.readline().strip() == "ready"
    finally:
        driver.send_signal(signal.SIGKILL)  # the old controller dies hard
        driver.wait(timeout=10)
    time.sleep(2.5)  # "adopt-done" ends while nobody watches
    found = env.backend.attempts()
    assert {k: found.get(k) for k in ("adopt-run", "adopt-done", "orphan")} == {
        "adopt-run": 0,
        "adopt-done": 0,
        "orphan": 0,
    }
    env.backend.adopt(job("adopt-run", "sleep 4; exit 5"), alloc("n3"))
    env.backend.adopt(job("adopt-done", "sleep 2; exit 4"), alloc("n3"))
    env.backend.adopt(job("ghost", "true"), alloc("n3"))
    env.events.wait_job("adopt-run", EventKind.STARTED, timeout=10)
    assert env.events.wait_job("adopt-done", EventKind.EXITED, timeout=10).exit_code == 4
    ghost = env.events.wait_job("ghost", EventKind.START_INTERRUPTED, timeout=10)
    assert ghost.message == "attempt 0 could not be adopted: placement group missing, 0 of 1 actors"
    assert job_processes("orphan")
    env.backend.remove("orphan", 0)
    wait_until(lambda: job_processes("orphan") == [], timeout=10)
    assert pg_state("orphan") is None
    assert env.events.wait_job("adopt-run", EventKind.EXITED, timeout=15).exit_code == 5
    env.backend.release("adopt-run", 0)
    env.backend.release("adopt-done", 0)
    wait_until(lambda: pg_state("adopt-run") is None and pg_state("adopt-done") is None, timeout=10)
    assert env.events.of("adopt-done") == [EventKind.EXITED]  # it had ended: no STARTED
    assert not {"adopt-run", "adopt-done", "orphan"} & set(env.backend.attempts())


CRASHING_DRIVER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from scheduler.backends.ray_backend import RayBackend
    from scheduler.clock import WallClock
    from scheduler.model.job import Job, JobSpec
    from scheduler.model.plan import Allocation, NodeAllocation

    backend = RayBackend(sys.argv[1], Path(sys.argv[2]), WallClock())
    alloc = Allocation(nodes=(NodeAllocation(node="n3", gpus=(1,)),))
    backend.start(Job(id="interrupted", spec=JobSpec(command="sleep 60")), alloc)
    time.sleep(60)  # crash_at=after_placement_group kills this process first
    """
)


def test_a_start_its_controller_died_in_is_interrupted_not_failed(env: Env) -> None:
    """A controller that dies between the placement group and the ranks leaves a half-started
    attempt. Its successor cannot adopt it: that is the failover's doing, not the job's, so it is
    START_INTERRUPTED (requeued without counting), never START_FAILED (a job failed after four
    failovers under the chaos soak)."""
    driver = subprocess.run(
        [sys.executable, "-c", CRASHING_DRIVER, env.cluster.address, str(env.backend.log_dir)],
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "RAY_AUTH_MODE": "disabled",
            "CORRAL_FAULTS": "crash_at=after_placement_group",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert driver.returncode == -signal.SIGKILL, driver.stderr[-2000:]
    assert env.backend.attempts().get("interrupted") == 0  # its placement group outlived it
    env.backend.adopt(job("interrupted", "sleep 60"), alloc("n3"))
    ended = env.events.wait_job("interrupted", EventKind.START_INTERRUPTED, timeout=15)
    assert ended.message == "attempt 0 could not be adopted: placement group found, 0 of 1 actors"
    wait_until(lambda: pg_state("interrupted") is None, timeout=10)
    assert env.events.of("interrupted") == [EventKind.START_INTERRUPTED]


def test_an_attempt_whose_adoption_or_stop_fails_unexpectedly_still_ends(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ray call raising where none was expected must not leave an attempt tracked for ever: the
    controller would re-issue its stop without end (seen under the chaos suite)."""
    real = env.backend._find_named
    calls = {"n": 0}

    def flaky(job_id: str, attempt: int) -> object:
        if job_id == "flaky" and calls["n"] == 0:
            calls["n"] += 1
            raise RuntimeError("GCS hiccup")
        return real(job_id, attempt)

    monkeypatch.setattr(env.backend, "_find_named", flaky)
    env.backend.adopt(job("flaky", "true"), alloc("n3"))
    ended = env.events.wait_job("flaky", EventKind.START_FAILED, timeout=10)
    assert ended.message.startswith("the backend lost track of attempt 0: RuntimeError: GCS hiccup")
    assert "flaky" not in env.backend.attempts()


def test_a_stop_asked_again_long_after_its_grace_is_forced(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start stuck (or still queued behind others) never sees its stop: when the controller's
    watchdog asks again, the attempt is ended by its names, and a late start starts nothing."""
    queued: list[tuple[object, ...]] = []
    real_submit = env.backend._submit

    def hold_starts(fn: object, *args: object) -> None:
        if getattr(args[0] if args else None, "__name__", "") == "_start_run":
            queued.append(args)  # the start waits in the queue (pool saturated)
            return
        real_submit(fn, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(env.backend, "_submit", hold_starts)
    stuck = job("stuck", "sleep 30")
    env.backend.start(stuck, alloc("n3"))
    assert queued, "the start was not queued"
    env.backend.stop(stuck, 1.0)  # noticed by nobody: the start never ran
    time.sleep(0.5)
    assert env.events.of("stuck") == []
    env.backend.stop(stuck, 1.0)  # asked again at once: not overdue, nothing forced
    time.sleep(0.5)
    assert env.events.of("stuck") == []
    run = env.backend._runs[("stuck", 0)]
    run.stop_asked_at -= 1000  # the watchdog's re-issue comes long after the grace
    env.backend.stop(stuck, 1.0)
    assert env.events.wait_job("stuck", EventKind.STOPPED, timeout=15)
    monkeypatch.setattr(env.backend, "_submit", real_submit)
    task, late = queued[0]
    task(late)  # the start finally runs: it finds the attempt ended and starts nothing
    time.sleep(1.0)
    assert env.events.of("stuck") == [EventKind.STOPPED] and pg_state("stuck") is None


@ray.remote(num_cpus=0)
def _answer_after(seconds: float, fail: bool) -> str:
    time.sleep(seconds)
    if fail:
        raise RuntimeError("this rank's actor died")
    return "ok"


def test_a_rank_whose_failure_surfaces_just_after_the_deadline_is_blamed_before_a_slow_one(env: Env) -> None:
    """On a loaded machine Ray can report a dead actor a moment after the start deadline, while a
    healthy rank on another node is still slow to answer. The start must blame the dead rank's
    node (that is the node a cordon should count), not the first rank still pending (found by CI:
    'rank 0 on node n00 did not answer within 3 s' while rank 1's node was the broken one)."""
    from scheduler.backends.ray_backend import _Run, _StartError

    run = _Run(job=job("blame", "true", gpus=1, nodes=2), node_ids=("n1", "n2"), gpus=(1, 1))
    refs = [_answer_after.remote(30.0, False), _answer_after.remote(2.0, True)]
    with pytest.raises(_StartError) as raised:
        env.backend._gather(run, refs, deadline=time.monotonic() + 1.0)
    blamed = raised.value
    assert blamed.node == "n2" and "worker actor of rank 1 on node n2" in str(blamed), blamed
    for ref in refs:
        ray.cancel(ref, force=True)
