"""A rank's processes: everything its command started, found, signalled and reaped by the worker.

The worker process makes itself a child subreaper, so an orphan of the job (a daemonized helper, a
`setsid` child whose parent exited) is re-parented to the worker instead of init and stays findable
as one of its descendants. The job's processes are then the worker's descendants minus whatever
the worker already had as children before the rank started (a Ray 2.60 actor process has none; if
Ray ever forks helpers, they are left alone). Shipped to the nodes by value with the worker actor;
it needs psutil, which Ray vendors.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from typing import Any

import psutil

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
_POLL_S = 0.02
_KILL_WAIT_S = 5.0  # after SIGKILL, how long to wait for the processes to be gone (D state aside)


def become_subreaper() -> bool:
    """Adopt this process's orphaned descendants (Linux); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0


def _key(proc: Any) -> tuple[int, float] | None:
    try:
        return (int(proc.pid), float(proc.create_time()))
    except psutil.Error:
        return None


class ProcTree:
    """The job's processes below this (worker) process. Create it just before starting the job."""

    def __init__(self) -> None:
        self._me = psutil.Process()
        # The worker's children before the job existed are not the job's (pid + start time, so a
        # reused pid is not mistaken for one of them).
        self._foreign = {key for child in self._children() if (key := _key(child)) is not None}

    def _children(self) -> list[Any]:
        try:
            return list(self._me.children())
        except psutil.Error:
            return []

    def _own_children(self) -> list[Any]:
        return [c for c in self._children() if _key(c) not in self._foreign]

    def processes(self) -> list[Any]:
        """Every live process of the job (zombies left out)."""
        found: list[Any] = []
        for child in self._own_children():
            with contextlib.suppress(psutil.Error):
                found.append(child)
                found.extend(child.children(recursive=True))
        return [p for p in found if _alive(p)]

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to every process of the job (psutil checks each pid is still that process)."""
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)

    def reap(self, skip: int | None = None) -> None:
        """Collect the exit status of the job's re-parented orphans that ended. Only those pids:
        the rank's leader (`skip`) belongs to its Popen, whose status must not be stolen."""
        for child in self._own_children():
            if child.pid != skip and not _alive(child):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(child.pid, os.WNOHANG)

    def end(self, kill_at: float) -> bool:
        """Wait until the job's processes are gone, SIGKILLing the rest from monotonic time `kill_at`
        (at once if it has passed); reap them. False if some survive even SIGKILL for a while."""
        give_up = max(kill_at, time.monotonic()) + _KILL_WAIT_S
        while True:
            left = self.processes()
            self.reap()
            if not left:
                return True
            now = time.monotonic()
            if now >= give_up:
                return False
            if now >= kill_at:
                for proc in left:
                    with contextlib.suppress(psutil.Error):
                        proc.send_signal(signal.SIGKILL)
            time.sleep(_POLL_S)


def _alive(proc: Any) -> bool:
    try:
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
