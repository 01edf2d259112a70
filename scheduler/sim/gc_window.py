"""Collect the youngest generation of garbage less often while replays run.

A replay allocates a great many short-lived containers (ranks, keys, plans), few of them in
reference cycles, so reference counting frees nearly all of them at once. With CPython's default
threshold (a young-generation collection every 700 net allocations) the cyclic collector took 6–8%
of a contended replay's time (README, issue 12), scanning what was about to be freed anyway. While
at least one replay runs, the young threshold is raised; the last one to finish puts it back.
Replays may run in threads beside each other (start-time estimates in the API server).
"""

from __future__ import annotations

import gc
import threading
from types import TracebackType

YOUNG_THRESHOLD = 50_000

_lock = threading.Lock()
_running = 0
_saved: tuple[int, int, int] | None = None


class FewerCollections:
    """A context manager: raises the young-generation threshold to YOUNG_THRESHOLD (never lowers
    it) for as long as any such window is open."""

    def __enter__(self) -> None:
        global _running, _saved
        with _lock:
            if _running == 0:
                _saved = gc.get_threshold()
                young, middle, old = _saved
                gc.set_threshold(max(young, YOUNG_THRESHOLD), middle, old)
            _running += 1

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        global _running, _saved
        with _lock:
            _running -= 1
            if _running == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None
