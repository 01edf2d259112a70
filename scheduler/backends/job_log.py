"""A job's log: one file its ranks append to line by line (O_APPEND), capped in size.

The worker process opens the log itself (as the controller's user, never the job's) and pumps the
rank's output into it. Past the cap, or once the file cannot be written (a full disk), the pump
keeps draining the rank's pipe and discards: a job must never block on a full pipe because of its
log. Shipped to the nodes by value with the worker actor, so it needs only the standard library.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from typing import IO

log = logging.getLogger("corral.job_log")

LOG_MODE = 0o600  # the controller reads it; jobs (another user when Corral runs as root) must not
MAX_LINE = 64 * 1024  # a longer line is split: a newline-free stream must not grow memory without end
_DRAIN_CHUNK = 64 * 1024
# Far from the cap, ranks append without a lock; within this distance each write takes the file's
# lock, so exactly one rank writes the truncation line and no line lands after it.
_LOCK_ZONE = 64 * 1024


def truncation_line(cap: int) -> bytes:
    return f"corral: log truncated at {cap} bytes (the log cap); output after this is discarded\n".encode()


class JobLog:
    """Appends whole lines (each with the rank's prefix) until the file reaches `cap` bytes."""

    def __init__(self, fd: int, cap: int, prefix: bytes = b"") -> None:
        self._fd = fd
        self._cap = cap
        self._prefix = prefix
        self._open = True  # False past the cap or after a failed write: discard from then on

    @classmethod
    def open(cls, path: str, cap: int, prefix: bytes = b"") -> JobLog:
        """Open (create) the log for appending; raises OSError when it cannot be opened."""
        return cls(
            os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOG_MODE), cap, prefix
        )

    @property
    def writing(self) -> bool:
        return self._open

    def write_line(self, line: bytes) -> None:
        """Append one line (a newline is added if missing); never raises."""
        if not self._open:
            return
        data = self._prefix + (line if line.endswith(b"\n") else line + b"\n")
        try:
            size = os.fstat(self._fd).st_size
            if size >= self._cap:  # only the truncation step reaches the cap: it is done
                self._open = False
            elif size + len(data) < self._cap - _LOCK_ZONE:
                os.write(self._fd, data)
            else:
                self._write_near_cap(data)
        except OSError as exc:
            self._open = False
            log.warning("job log write failed (%s): the rest of this rank's output is discarded", exc)

    def _write_near_cap(self, data: bytes) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(self._fd).st_size
            if size + len(data) < self._cap:  # lines alone stay below the cap
                os.write(self._fd, data)
                return
            self._open = False
            if size >= self._cap:  # another rank got there first and wrote the truncation line
                return
            room = self._cap - size  # ≥ 1: fill up to exactly the cap, so every rank sees it reached
            os.write(self._fd, data[: room - 1] + b"\n")
            os.write(self._fd, truncation_line(self._cap))
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def pump(stream: IO[bytes], job_log: JobLog) -> None:
    """Copy a rank's output into its log line by line until EOF, then close both.

    Once the log stops taking lines, the rest is read in chunks and dropped, so the rank's writes
    never block on a full pipe."""
    try:
        while job_log.writing:
            line = stream.readline(MAX_LINE)
            if not line:
                return
            job_log.write_line(line)
        read = getattr(stream, "read1", stream.read)
        while read(_DRAIN_CHUNK):
            pass
    finally:
        job_log.close()
        stream.close()
