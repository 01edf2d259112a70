"""Streaming a job's log file (`<log_dir>/<job id>.log`, appended to by the job's worker processes).

Without follow: the bytes from `offset` to the current end (nothing if the file does not exist
yet). With follow: keep sending bytes as they are appended, polling every `poll_s`, and stop once
the job is terminal and the file has been read to its end — so `corral logs -f` exits by itself
when the job finishes. A sync generator: Starlette runs each step in its threadpool.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

CHUNK = 64 * 1024
POLL_S = 0.2


def log_path(log_dir: Path, job_id: str) -> Path:
    return log_dir / f"{job_id}.log"


def _read_from(path: Path, offset: int) -> Iterator[bytes]:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            while chunk := f.read(CHUNK):
                yield chunk
    except FileNotFoundError:
        return


def stream_log(
    path: Path,
    *,
    offset: int = 0,
    follow: bool = False,
    is_finished: Callable[[], bool],
    poll_s: float = POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[bytes]:
    """Yield the log's bytes from `offset`; with `follow`, until `is_finished()` and fully read."""
    position = offset
    while True:
        # Ask before reading: bytes written before the job ended are then sure to be read below.
        finished = is_finished() if follow else True
        for chunk in _read_from(path, position):
            position += len(chunk)
            yield chunk
        if finished:
            return
        sleep(poll_s)
