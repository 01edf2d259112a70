"""Counterfactual reasons for the live controller, computed off the decide cycle's hot path.

After each cycle the controller hands over its snapshot and plan (`offer`: a reference, no work).
A daemon thread then runs scheduler.policy.suggest for the first `per_queue` waiting jobs of each
queue, at most every `min_interval_s` (and at least ten times as long as the last refresh took),
stopping after `budget_s` of work (checked before each trial cycle); the API reads the results
(`get`). It shares the process (and the GIL) with the controller and the API, hence the caps: on
average it takes at most about a tenth of one core. The results are those of the latest snapshot
computed on; a job no longer among the first waiting ones has none.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from scheduler.model.job import Job
from scheduler.model.plan import Place, Plan, Reject
from scheduler.model.snapshot import ClusterSnapshot
from scheduler.policy.config import PolicyConfig
from scheduler.policy.suggest import Suggestion, suggest
from scheduler.store.token_store import TokenRecord

log = logging.getLogger("corral.suggestions")

__all__ = ["SuggestionWorker", "team_queues"]


@dataclass(frozen=True, slots=True)
class _Offer:
    snapshot: ClusterSnapshot
    plan: Plan
    now: float
    version: int


class SuggestionWorker:
    def __init__(
        self,
        config: PolicyConfig,
        *,
        per_queue: int = 3,
        min_interval_s: float = 5.0,
        budget_s: float = 1.0,
        max_tries: int = 10,
        team_queues: Callable[[], Mapping[str, Collection[str] | None]] | None = None,
    ) -> None:
        """`team_queues()`: team → the queues its tokens may use (None, or a team not in it: any),
        read once per refresh, so that queue suggestions are tried only there; the API checks the
        reader's own token again."""
        self.config = config
        self.per_queue = per_queue
        self.min_interval_s = min_interval_s
        self.budget_s = budget_s
        self.max_tries = max_tries
        self.team_queues = team_queues
        self._offer: _Offer | None = None
        self._done_version = -1
        self._results: Mapping[str, tuple[Suggestion, ...]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_run = float("-inf")
        self._last_cost = 0.0
        self.refreshes = 0

    # --- the controller's side ---------------------------------------------------------------------
    def offer(self, snapshot: ClusterSnapshot, plan: Plan, now: float, version: int) -> None:
        """The cycle's snapshot and plan (immutable): kept by reference, computed on later."""
        self._offer = _Offer(snapshot, plan, now, version)
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="corral-suggestions", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the API's side ----------------------------------------------------------------------------
    def get(self, job_id: str) -> tuple[Suggestion, ...]:
        return self._results.get(job_id, ())

    # --- the work ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.min_interval_s)
            self._wake.clear()
            if self._stopping.is_set():
                return
            wait = self._last_run + max(self.min_interval_s, 10 * self._last_cost) - time.monotonic()
            if wait > 0:
                self._stopping.wait(wait)
                if self._stopping.is_set():
                    return
            try:
                self.refresh()
            except Exception:  # a suggestion is a courtesy: never let it take anything down
                log.exception("computing suggestions failed")

    def refresh(self) -> None:
        """Compute suggestions for the latest offered snapshot, if not done yet (also called by
        tests, synchronously)."""
        offer = self._offer
        if offer is None or offer.version == self._done_version:
            return
        t0 = time.monotonic()
        deadline = t0 + self.budget_s
        done = {d.job_id for d in offer.plan.decisions if isinstance(d, Place | Reject)}
        results: dict[str, tuple[Suggestion, ...]] = {}
        allowed = self.team_queues() if self.team_queues is not None else {}
        for job in self._heads(offer.snapshot, done):
            if time.monotonic() >= deadline:
                break
            queues = allowed.get(job.team)
            found = suggest(
                offer.snapshot,
                self.config,
                offer.now,
                job,
                plan=offer.plan,
                queues=queues,
                max_tries=self.max_tries,
                stop=lambda: time.monotonic() >= deadline,
            )
            if found:
                results[job.id] = found
        with self._lock:
            self._results = results
            self._done_version = offer.version
        self._last_run = time.monotonic()
        self._last_cost = self._last_run - t0
        self.refreshes += 1

    def _heads(self, snapshot: ClusterSnapshot, done: Collection[str]) -> Sequence[Job]:
        """The first `per_queue` jobs of each queue that still wait, queue heads first."""
        rounds: list[list[Job]] = [[] for _ in range(self.per_queue)]
        for name in sorted(snapshot.pending):
            taken = 0
            for job in snapshot.pending[name]:
                if taken >= self.per_queue:
                    break
                if job.id in done:
                    continue
                rounds[taken].append(job)
                taken += 1
        return [job for r in rounds for job in r]


def team_queues(tokens: Iterable[TokenRecord]) -> dict[str, frozenset[str] | None]:
    """Team → the queues its active tokens may use together (None: some token may use any)."""
    out: dict[str, frozenset[str] | None] = {}
    for t in tokens:
        if not t.active:
            continue
        mine = None if t.admin or t.limits.queues is None else frozenset(t.limits.queues)
        if t.team in out:
            before = out[t.team]
            out[t.team] = None if before is None or mine is None else before | mine
        else:
            out[t.team] = mine
    return out
