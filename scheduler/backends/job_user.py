"""The unprivileged user jobs run as when Corral runs as root.

A job must never run with the controller's rights: as root it could read the store, the tokens and
every other job's log. The Ray backend runs each rank as this user (RayBackend(job_user=...)).
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import subprocess

log = logging.getLogger("corral.job_user")

DEFAULT_JOB_USER = "corral-job"
FALLBACK_USER = "nobody"
_NO_LOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")


class JobUserError(RuntimeError):
    pass


def ensure_job_user(name: str = DEFAULT_JOB_USER) -> str | None:
    """As root: the name of an unprivileged user for jobs, creating `name` as a system user without
    login shell or home if missing, else falling back to "nobody". Not root: None (jobs run as the
    current user, who is no more privileged than the controller)."""
    if os.geteuid() != 0:
        return None
    if _user_exists(name):
        return name
    why = _create(name)
    if why is None or _user_exists(name):  # created (here or concurrently)
        return name
    if _user_exists(FALLBACK_USER):
        log.warning("cannot create the job user %s (%s): jobs run as %s", name, why, FALLBACK_USER)
        return FALLBACK_USER
    raise JobUserError(
        f"cannot create the job user {name} ({why}) and there is no user {FALLBACK_USER}: "
        "create an unprivileged user and pass it as the job user"
    )


def _create(name: str) -> str | None:
    """useradd a system user; None on success, else why not (one line)."""
    shell = next((s for s in _NO_LOGIN_SHELLS if os.path.exists(s)), "/bin/false")
    group = ["--gid", name] if _group_exists(name) else ["--user-group"]
    argv = ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", shell]
    try:
        done = subprocess.run(
            [*argv, *group, "--", name], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"useradd exited with code {done.returncode}"


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True
