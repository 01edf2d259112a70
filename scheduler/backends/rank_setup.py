"""Getting a rank ready to run on its node: who it runs as, its directories, and why it could not
start, in a shell's words (127: command not found, 126: cannot execute).

Runs inside the worker actor, on the node (shipped by value with it; standard library only).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NOT_FOUND = 127  # what a shell returns for a command it cannot find
CANNOT_EXECUTE = 126  # ... and for one it found but cannot run (permissions, a missing directory)
_HELPER_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Launch:
    """What one rank runs and where; built by the backend, carried out by the worker."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: str
    log_path: str
    node: str  # the Corral node id, for messages
    prefix: str = ""  # "[rank R] " for gangs
    log_cap: int = 1 << 30
    own_cwd: bool = False  # Corral's per-job directory: created 0700 for the job user
    checkpoint_dir: str = ""
    own_checkpoint: bool = False  # Corral's default checkpoint directory: likewise
    user: str | None = None  # run as this user when the worker is root


class StartFailure(Exception):
    """The rank's command cannot start: it ends at once with a shell's exit code and this message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class JobUser:
    name: str
    uid: int
    gid: int


def job_user(launch: Launch) -> JobUser | None:
    """The unprivileged user the rank runs as: only when one is set and the worker is root."""
    if not launch.user or os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(launch.user)
    except KeyError:
        raise StartFailure(
            CANNOT_EXECUTE, f"job user {launch.user} does not exist on node {launch.node}"
        ) from None
    return JobUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def prepare_dirs(launch: Launch, user: JobUser | None) -> None:
    """Create Corral's own directories for the job; check the user's working directory exists."""
    if launch.own_cwd:
        _private_dir(launch.cwd, user, launch.node, "working directory")
    elif not os.path.isdir(launch.cwd):
        raise StartFailure(
            CANNOT_EXECUTE, f"working directory {launch.cwd} does not exist on node {launch.node}"
        )
    if user is not None:
        _check_reachable(launch.cwd, user, launch.node, "working directory")
    if not launch.checkpoint_dir:
        return
    if launch.own_checkpoint:
        _private_dir(launch.checkpoint_dir, user, launch.node, "checkpoint directory")
        if user is not None:
            _check_reachable(launch.checkpoint_dir, user, launch.node, "checkpoint directory")
    elif user is not None:
        _makedirs_as(user, launch.checkpoint_dir, launch.node)  # never create a user's path as root
    else:
        try:
            os.makedirs(launch.checkpoint_dir, exist_ok=True)
        except OSError as exc:
            raise _cannot_create("checkpoint directory", launch.checkpoint_dir, launch.node, exc) from None


def _private_dir(path: str, user: JobUser | None, node: str, what: str) -> None:
    """`path` as a directory of mode 0700 owned by the job user; its parents stay the worker's."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        if not stat.S_ISDIR(os.lstat(path).st_mode):  # a symlink is refused, not followed
            raise StartFailure(CANNOT_EXECUTE, f"{what} {path} on node {node} is not a directory")
        if user is not None:
            os.chown(path, user.uid, user.gid, follow_symlinks=False)
        os.chmod(path, 0o700, follow_symlinks=False)
    except OSError as exc:
        raise _cannot_create(what, path, node, exc) from None


def _check_reachable(path: str, user: JobUser, node: str, what: str) -> None:
    # Popen changes directory before it changes user, so it cannot tell: ask as the user.
    why = _run_as(user, ["/bin/sh", "-c", 'cd -- "$1"', "sh", path])
    if why is not None:
        raise StartFailure(
            CANNOT_EXECUTE,
            f"{what} {path} is not accessible to user {user.name} on node {node}; "
            "make it and its parent directories searchable by that user",
        )


def _makedirs_as(user: JobUser, path: str, node: str) -> None:
    why = _run_as(user, ["mkdir", "-p", "--", path])
    if why is not None:
        raise StartFailure(
            CANNOT_EXECUTE,
            f"cannot create checkpoint directory {path} on node {node} as user {user.name}: {why}",
        )


def _run_as(user: JobUser, argv: Sequence[str]) -> str | None:
    """Run a small helper as the job user; None if it succeeded, else its last line of stderr."""
    try:
        done = subprocess.run(
            list(argv),
            user=user.uid,
            group=user.gid,
            extra_groups=[],
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_HELPER_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    lines = done.stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"{argv[0]} exited with code {done.returncode}"


def _cannot_create(what: str, path: str, node: str, exc: OSError) -> StartFailure:
    return StartFailure(CANNOT_EXECUTE, f"cannot create {what} {path} on node {node}: {exc.strerror}")


def popen_identity(user: JobUser | None, cwd: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Popen's keyword arguments and extra environment that make the rank run as `user`: its uid,
    its primary group, no supplementary groups, HOME in the job's working directory."""
    if user is None:
        return {}, {}
    env = {"HOME": cwd, "USER": user.name, "LOGNAME": user.name}
    return {"user": user.uid, "group": user.gid, "extra_groups": []}, env


def exec_failure(exc: OSError, launch: Launch, user: JobUser | None) -> StartFailure:
    """Popen's error as a shell would report it. Python names `cwd` as the filename when the
    child's chdir failed, the program when exec failed, and none when changing user failed."""
    program = launch.argv[0] if launch.argv else ""
    why = exc.strerror or str(exc)
    as_user = f" to user {user.name}" if user is not None else ""
    if exc.filename == launch.cwd and program != launch.cwd:
        if exc.errno == errno.ENOENT:
            return StartFailure(
                CANNOT_EXECUTE, f"working directory {launch.cwd} does not exist on node {launch.node}"
            )
        return StartFailure(
            CANNOT_EXECUTE, f"working directory {launch.cwd} is not accessible on node {launch.node}: {why}"
        )
    if exc.filename is None and user is not None:
        return StartFailure(CANNOT_EXECUTE, f"cannot switch to user {user.name} on node {launch.node}: {why}")
    if exc.errno == errno.ENOENT:
        return StartFailure(NOT_FOUND, f"command not found: {program}")
    if exc.errno == errno.EACCES:
        return StartFailure(
            CANNOT_EXECUTE, f"permission denied: {program} (not executable or not accessible{as_user})"
        )
    return StartFailure(CANNOT_EXECUTE, f"cannot execute {program}: {why}")


def open_failure(exc: OSError, launch: Launch) -> StartFailure:
    return StartFailure(
        CANNOT_EXECUTE,
        f"cannot open the job's log file {launch.log_path} on node {launch.node}: {exc.strerror}",
    )
