"""The job user: created as a real system user when Corral runs as root, none otherwise."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from collections.abc import Iterator

import pytest

from scheduler.backends.job_user import ensure_job_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creating users needs root (CI runs as root)")


@pytest.fixture
def throwaway_name() -> Iterator[str]:
    name = f"corral-t{os.getpid()}"
    yield name
    subprocess.run(["userdel", name], capture_output=True, check=False, timeout=30)


def test_root_creates_a_system_user_without_login_or_home_once(throwaway_name: str) -> None:
    with pytest.raises(KeyError):
        pwd.getpwnam(throwaway_name)
    assert ensure_job_user(throwaway_name) == throwaway_name
    entry = pwd.getpwnam(throwaway_name)
    assert entry.pw_uid != 0 and entry.pw_gid != 0
    assert entry.pw_shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
    assert entry.pw_dir == "/nonexistent" and not os.path.exists(entry.pw_dir)
    assert grp.getgrgid(entry.pw_gid).gr_mem == []  # its own primary group, no members
    assert [g.gr_name for g in grp.getgrall() if throwaway_name in g.gr_mem] == []  # no extra groups
    assert ensure_job_user(throwaway_name) == throwaway_name  # already there: left as it is
    assert pwd.getpwnam(throwaway_name) == entry


def test_a_user_that_cannot_be_created_falls_back_to_nobody() -> None:
    assert ensure_job_user("not a valid user name!") == "nobody"


def test_not_root_means_no_job_user() -> None:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child drops to nobody and answers through the pipe
        try:
            os.setgroups([])
            os.setgid(pwd.getpwnam("nobody").pw_gid)
            os.setuid(pwd.getpwnam("nobody").pw_uid)
            os.write(write_fd, repr(ensure_job_user()).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as answer:
        assert answer.read() == b"None"
    assert os.waitpid(pid, 0)[1] == 0
