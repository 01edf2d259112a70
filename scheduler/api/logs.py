"""Streaming a job's log file (`<log_dir>/<job id>.log`, appended to by the job's worker processes).

Without follow: the bytes from `offset` to the current end (nothing if the file does not exist yet,
or if `offset` is past its end). With follow: keep sending bytes as they are appended and stop once
the job is terminal and the file has been read to its end — so `corral logs -f` exits by itself
when the job finishes.

Followers are async and cheap, so a hundred open `logs -f` leave the API responsive: each waits on
the event loop with asyncio.sleep, checks its file's size with one stat() per poll and reads only
what was appended, in bounded chunks (a read of ≤ 64 KiB from the page cache is far quicker than a
thread hop). Whether their jobs ended is asked by ONE `EndWatcher` for all of them: one store query
per poll, off the event loop, however many follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = ["CHUNK", "POLL_S", "EndWatcher", "FollowResponse", "log_path", "read_log"]

CHUNK = 64 * 1024
POLL_S = 0.2


def log_path(log_dir: Path, job_id: str) -> Path:
    return log_dir / f"{job_id}.log"


def _read_chunk(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(CHUNK)
    except FileNotFoundError:
        return b""


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


class EndWatcher:
    """Tells followers when their jobs end, with one `ended(job_ids)` call per poll for all of them.

    `ended` is sync (a store query) and runs in a worker thread; the watcher's task runs only while
    someone follows.
    """

    def __init__(self, ended: Callable[[Collection[str]], Collection[str]], poll_s: float = POLL_S) -> None:
        self._ended = ended
        self._poll_s = poll_s
        self._events: dict[str, asyncio.Event] = {}
        self._refs: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, job_id: str) -> asyncio.Event:
        """An event set once the job is terminal (call unwatch when done)."""
        event = self._events.setdefault(job_id, asyncio.Event())
        self._refs[job_id] = self._refs.get(job_id, 0) + 1
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run())
        return event

    def unwatch(self, job_id: str) -> None:
        left = self._refs.get(job_id, 0) - 1
        if left > 0:
            self._refs[job_id] = left
        else:
            self._refs.pop(job_id, None)
            self._events.pop(job_id, None)

    @property
    def watched(self) -> int:
        return len(self._refs)

    async def _run(self) -> None:
        while self._refs:
            waiting = [j for j, e in self._events.items() if not e.is_set()]
            if waiting:
                try:
                    done = await anyio.to_thread.run_sync(self._ended, waiting)
                except Exception:  # a store hiccup: followers keep following, ask again next poll
                    done = ()
                for job_id in done:
                    event = self._events.get(job_id)
                    if event is not None:
                        event.set()
            await asyncio.sleep(self._poll_s)


async def read_log(
    path: Path,
    *,
    offset: int = 0,
    ended: asyncio.Event | None = None,
    poll_s: float = POLL_S,
) -> AsyncIterator[bytes]:
    """The log's bytes from `offset`; with `ended` (follow), until it is set and the file fully read."""
    position = offset
    while True:
        # Look before reading: bytes written before the job ended are then sure to be read below.
        finished = ended is None or ended.is_set()
        while _size(path) > position:
            chunk = _read_chunk(path, position)
            if not chunk:
                break
            position += len(chunk)
            yield chunk
            await asyncio.sleep(0)  # a long log does not hold the loop
        if finished:
            return
        assert ended is not None
        # wake early when the job ends, to read its last bytes at once
        with anyio.move_on_after(poll_s):
            await ended.wait()


class FollowResponse(StreamingResponse):
    """A streamed log that calls `release` exactly once when it ends, however it ends (finished,
    client gone, error): the follower's slot is freed even if the client vanished while the log was
    quiet (the disconnect is watched, not only noticed at the next write)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/plain; charset=utf-8")
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    with contextlib.suppress(OSError):  # the client went away mid-write
                        await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            self._release()
