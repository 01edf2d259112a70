"""Group commit for submissions: one writer thread turns concurrent submits into one transaction.

Each submission is durable when its future resolves (its transaction committed), exactly as with
Store.submit(); but N requests arriving together cost one BEGIN/COMMIT, one lock hand-off and (on
PostgreSQL) one fsync instead of N. Under no load a batch is a single submission, so latency does
not grow: the writer never waits to fill a batch, it takes whatever is queued.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from scheduler.model.job import JobSpec
from scheduler.model.records import JobRecord
from scheduler.store.errors import IdempotencyConflict, Overloaded, unavailable
from scheduler.store.store import Store

log = logging.getLogger("corral.store")

Submitted = tuple[JobRecord, bool]


@dataclass(frozen=True, slots=True)
class _Request:
    spec: JobSpec
    team: str
    now: float
    result: Future[Submitted]


MAX_PENDING = 10_000  # submissions waiting for the writer; beyond it the API answers 429


class SubmitBatcher:
    def __init__(self, store: Store, max_batch: int = 256, max_pending: int = MAX_PENDING) -> None:
        self._store = store
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="corral-submit-writer", daemon=True)
        self._thread.start()

    def submit(self, spec: JobSpec, team: str, now: float) -> Future[Submitted]:
        """A future of Store.submit(spec, team, now): (record, created) or its exception. Overloaded
        at once when `max_pending` submissions already wait (a slow or stalled store): backpressure
        for the clients instead of an unbounded queue."""
        with self._pending_lock:
            if self._pending >= self._max_pending:
                raise Overloaded(self._pending)
            self._pending += 1
        request = _Request(spec, team, now, Future())
        request.result.add_done_callback(self._done)
        self._queue.put(request)
        return request.result

    def _done(self, _: Future[Submitted]) -> None:
        with self._pending_lock:
            self._pending -= 1

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[_Request]) -> None:
        try:
            results = self._store.submit_many([(r.spec, r.team, r.now) for r in batch])
        except Exception as exc:
            if unavailable(exc) is not None:  # the store is down or locked: all fail alike, at once
                for request in batch:
                    request.result.set_exception(exc)
                return
            # Nothing of the batch was written: retry one by one so one bad request fails alone.
            log.warning("batched submission of %d failed; submitting one by one", len(batch), exc_info=True)
            for request in batch:
                try:
                    request.result.set_result(self._store.submit(request.spec, request.team, request.now))
                except Exception as exc:
                    request.result.set_exception(exc)
            return
        for request, result in zip(batch, results, strict=True):
            if isinstance(result, IdempotencyConflict):
                request.result.set_exception(result)
            else:
                request.result.set_result(result)
