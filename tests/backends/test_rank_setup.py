"""Getting a rank ready, and its reasons in words (no Ray): real Popen errors, real directories."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.backends.job_user import ensure_job_user
from scheduler.backends.rank_setup import (
    JobUser,
    Launch,
    StartFailure,
    exec_failure,
    job_user,
    prepare_dirs,
)
from scheduler.backends.ray_attempt import rank_message, unplaced
from scheduler.backends.ray_worker import exit_message
from scheduler.model.cluster import Node

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="a job user exists only when Corral runs as root (CI does)")


def launch(tmp_path: Path, **fields: object) -> Launch:
    values: dict[str, object] = {
        "argv": ["true"],
        "env": {},
        "cwd": str(tmp_path),
        "log_path": str(tmp_path / "job.log"),
        "node": "n1",
    }
    values.update(fields)
    return Launch(**values)  # type: ignore[arg-type]


def popen_error(spec: Launch) -> StartFailure:
    try:
        subprocess.Popen(list(spec.argv), cwd=spec.cwd).wait(timeout=10)
    except OSError as exc:
        return exec_failure(exc, spec, None)
    raise AssertionError("the command started")


def test_popen_errors_read_as_a_shell_would_say_them(tmp_path: Path) -> None:
    missing = popen_error(launch(tmp_path, argv=["/no/such/binary", "-x"]))
    assert (missing.code, missing.message) == (127, "command not found: /no/such/binary")
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    denied = popen_error(launch(tmp_path, argv=[str(script)]))
    assert (
        denied.code == 126
        and denied.message == f"permission denied: {script} (not executable or not accessible)"
    )
    gone = popen_error(launch(tmp_path, cwd=str(tmp_path / "gone")))
    assert (gone.code, gone.message) == (
        126,
        f"working directory {tmp_path / 'gone'} does not exist on node n1",
    )


def test_exit_codes_in_words() -> None:
    assert exit_message(0) == ""
    assert exit_message(3) == "exited with code 3"
    assert exit_message(127) == "exited with code 127 (command not found)"
    assert exit_message(-9) == "killed by signal 9 (SIGKILL)"
    assert exit_message(-15) == "killed by signal 15 (SIGTERM)"


def test_a_missing_working_directory_of_the_users_is_never_created(tmp_path: Path) -> None:
    with pytest.raises(StartFailure) as failure:
        prepare_dirs(launch(tmp_path, cwd=str(tmp_path / "nope"), node="n7"), None)
    assert (failure.value.code, failure.value.message) == (
        126,
        f"working directory {tmp_path / 'nope'} does not exist on node n7",
    )
    assert not (tmp_path / "nope").exists()


def test_corrals_own_directories_are_private_and_never_a_symlink(tmp_path: Path) -> None:
    work, ckpt = tmp_path / "work" / "7", tmp_path / "ckpt" / "7"
    prepare_dirs(
        launch(tmp_path, cwd=str(work), own_cwd=True, checkpoint_dir=str(ckpt), own_checkpoint=True), None
    )
    assert work.stat().st_mode & 0o777 == 0o700 and ckpt.stat().st_mode & 0o777 == 0o700
    (tmp_path / "work" / "8").symlink_to("/etc")
    with pytest.raises(StartFailure, match=r"working directory .*/work/8 on node n1 is not a directory"):
        prepare_dirs(launch(tmp_path, cwd=str(tmp_path / "work" / "8"), own_cwd=True), None)


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A directory the job user can pass through (pytest's tmp_path lies below a 0700 one)."""
    root = Path(tempfile.mkdtemp(prefix="corral-rs-", dir="/tmp"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@needs_root
def test_as_root_the_rank_gets_the_job_user_and_its_own_directories(open_root: Path, tmp_path: Path) -> None:
    name = ensure_job_user()
    assert name is not None
    entry = pwd.getpwnam(name)
    user = job_user(launch(open_root, user=name))
    assert user == JobUser(name, entry.pw_uid, entry.pw_gid) and user.uid != 0
    work = open_root / "work" / "7"
    prepare_dirs(launch(open_root, cwd=str(work), own_cwd=True), user)
    assert (work.stat().st_uid, work.stat().st_mode & 0o777) == (entry.pw_uid, 0o700)
    assert (open_root / "work").stat().st_uid == 0  # only the job's own directory is the job's
    with pytest.raises(StartFailure, match="job user no-such-user-x does not exist on node n1"):
        job_user(launch(open_root, user="no-such-user-x"))
    hidden = tmp_path / "work" / "7"  # created, but below a directory the job user cannot pass
    with pytest.raises(StartFailure) as failure:
        prepare_dirs(launch(tmp_path, cwd=str(hidden), own_cwd=True), user)
    assert failure.value.message == (
        f"working directory {hidden} is not accessible to user {name} on node n1; "
        "make it and its parent directories searchable by that user"
    )
    ckpt = tmp_path / "checkpoints" / "7"  # likewise for Corral's checkpoint directory
    with pytest.raises(StartFailure) as failure:
        prepare_dirs(launch(open_root, checkpoint_dir=str(ckpt), own_checkpoint=True), user)
    assert failure.value.message.startswith(f"checkpoint directory {ckpt} is not accessible to user {name}")


@needs_root
def test_as_root_a_users_checkpoint_dir_is_created_as_the_job_user_never_as_root(open_root: Path) -> None:
    name = ensure_job_user()
    assert name is not None
    user = job_user(launch(open_root, user=name))
    assert user is not None
    shared = open_root / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    prepare_dirs(launch(open_root, checkpoint_dir=str(shared / "a" / "b")), user)
    assert (shared / "a" / "b").stat().st_uid == user.uid
    private = open_root / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(StartFailure) as failure:
        prepare_dirs(launch(open_root, checkpoint_dir=str(private / "ckpt")), user)
    assert failure.value.code == 126
    assert failure.value.message.startswith(
        f"cannot create checkpoint directory {private / 'ckpt'} on node n1 as user {name}: "
    )
    assert "Permission denied" in failure.value.message and not (private / "ckpt").exists()


def test_an_unplaced_placement_group_blames_the_node_that_cannot_take_its_bundle() -> None:
    nodes = {n: Node(id=n, region="r", rack=f"r/{n}", gpu_type="H100") for n in ("n1", "n2", "n3")}
    free = {"n1": 8.0, "n2": 4.0, "n3": 8.0}
    assert unplaced("corral-7-0", 30.0, [("n1", 8), ("n2", 8)], nodes, free) == (
        "placement group corral-7-0 not ready within 30 s (bundles for node n2 unplaced: 4 of 8 GPUs free)",
        "n2",
    )
    assert unplaced("corral-7-0", 30.0, [("gone", 8), ("n2", 8)], nodes, free) == (
        "placement group corral-7-0 not ready within 30 s (bundles for nodes gone, n2 unplaced: "
        "gone: not in the Ray cluster; n2: 4 of 8 GPUs free)",
        "gone",
    )
    assert unplaced("corral-7-0", 2.5, [("n1", 8), ("n3", 8)], nodes, free) == (
        "placement group corral-7-0 not ready within 2.5 s (bundles for nodes n1, n3 unplaced)",
        "",
    )
    # one node, GPUs free by Ray's count, and still not placed: that node is the only suspect
    assert unplaced("corral-7-0", 3.0, [("n1", 8)], nodes, free) == (
        "placement group corral-7-0 not ready within 3 s "
        "(bundle for node n1 unplaced although its GPUs are free)",
        "n1",
    )


def test_a_ranks_message_names_the_rank_only_in_a_gang() -> None:
    assert rank_message(("n1",), 0, "exited with code 3") == "exited with code 3"
    assert rank_message(("n1", "n2"), 1, "exited with code 3") == "rank 1 on node n2: exited with code 3"
    assert rank_message(("n1", "n2"), 1, "") == ""
