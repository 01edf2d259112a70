"""Step 2, admit: quota per queue and GPU type, with borrowing of a cohort's idle quota.

A queue may use its nominal quota of each GPU type. Above that it borrows what other queues of
its cohort leave idle (each lends at most its lending limit), and its borrowed GPUs (all types
together) stay within its borrowing limit. A queue without a cohort never exceeds its quota.
Cohort totals are kept incrementally so that an admission check is O(1) however big the cohort.

Claims: a job within its queue's quota that is refused because that quota is lent out claims it
for the rest of the cycle (`claim`). Claimed quota is not lent again — otherwise the borrowers'
jobs, requeued by the reclaim, would take back the GPUs it just freed — and later jobs of the same
queue count it as used when they ask whether they are within the quota (`within_nominal`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from scheduler.model.queue import Queue
from scheduler.policy.words import plural


class Admission:
    """Whether a queue takes more GPUs, how many of them it borrows, and, if not, why. Immutable:
    Final fields in a plain class, whose __init__ runs compiled (a dataclass's stays interpreted in
    the compiled build, and every admission that borrows or is refused makes one)."""

    __slots__ = ("borrowed", "detail", "ok")
    ok: Final[bool]
    borrowed: Final[int]  # GPUs of this admission above the queue's nominal quota
    detail: Final[str]

    def __init__(self, ok: bool, borrowed: int = 0, detail: str = "") -> None:
        self.ok = ok
        self.borrowed = borrowed
        self.detail = detail

    def __repr__(self) -> str:
        return f"Admission(ok={self.ok}, borrowed={self.borrowed}, detail={self.detail!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Admission):
            return NotImplemented
        return (self.ok, self.borrowed, self.detail) == (other.ok, other.borrowed, other.detail)

    def __hash__(self) -> int:
        return hash((self.ok, self.borrowed, self.detail))


_ADMITTED = Admission(True)  # the common answer, shared (Admission is immutable)
_REFUSED = Admission(False)  # a refusal, for callers that asked only yes or no


class QueueTerms:
    """A queue's quota terms, read once per ledger from its Queue: a pydantic model's attributes and
    methods are slow to reach from compiled code, and the ledger reads them at every admission and
    charge. Immutable (Final fields; a plain class for speed, as capacity.RackFree)."""

    __slots__ = ("borrowing_limit", "cohort", "lending_limit", "name", "quota")
    name: Final[str]
    cohort: Final[str | None]
    quota: Final[Mapping[str, int]]
    lending_limit: Final[int | None]
    borrowing_limit: Final[int | None]

    def __init__(self, queue: Queue) -> None:
        self.name = queue.name
        self.cohort = queue.cohort
        self.quota = queue.quota
        self.lending_limit = queue.lending_limit
        self.borrowing_limit = queue.borrowing_limit

    def nominal(self, gpu_type: str) -> int:
        return self.quota.get(gpu_type, 0)


def nominal_quota(queue: Queue, gpu_type: str) -> int:
    """Queue.nominal, called here instead: a pydantic model's method stays interpreted even in the
    compiled build (the ordering asks it for every tier it works out)."""
    return queue.quota.get(gpu_type, 0)


class QuotaLedger:
    """Per-queue GPU usage for one cycle; `admit` checks, `charge`/`refund` record."""

    def __init__(self, queues: Mapping[str, Queue], usage: Mapping[str, Mapping[str, int]]) -> None:
        self._queues = {name: QueueTerms(q) for name, q in queues.items()}
        self._usage: dict[str, dict[str, int]] = {q: dict(u) for q, u in usage.items()}
        self._lendable: dict[tuple[str, str], int] = {}  # (cohort, type) → idle quota lent out
        self._borrowed: dict[tuple[str, str], int] = {}  # (cohort, type) → GPUs used above quotas
        # (queue, type, GPUs) → (stamp it was worked out at, admission): see stamp().
        self._admitted: dict[tuple[str, str, int], tuple[tuple[int, int], Admission]] = {}
        self._ceilings: dict[tuple[str, str], int] = {}  # a function of the queues' config alone
        # Change counters: per (cohort, or the queue itself without one, type), and per queue.
        self._shared_changes: dict[tuple[bool, str, str], int] = {}
        self._queue_changes: dict[str, int] = {}
        self._claims_made: dict[tuple[str, str], int] = {}  # (cohort, type) → claims (see _refunded)
        self._claims_seen: dict[tuple[str, str], tuple[int, int, dict[str, int]]] = {}
        # (cohort, type) → (the refunds, the stamp, the cohort's lend and borrow change, per queue)
        self._refunds_seen: dict[
            tuple[str, str], tuple[Mapping[str, int], int, int, int, dict[str, tuple[int, int]]]
        ] = {}
        self._claims: dict[tuple[str, str], dict[str, int]] = {}  # (cohort, type) → queue → claimed
        types = {t for q in self._queues.values() for t in q.quota} | {t for u in usage.values() for t in u}
        for q in self._queues.values():
            if q.cohort is None:
                continue
            for t in types:
                key = (q.cohort, t)
                self._lendable[key] = self._lendable.get(key, 0) + self._lend_at(q, t, self.used(q.name, t))
                self._borrowed[key] = self._borrowed.get(key, 0) + self.over_nominal(q.name, t)

    def cohort_of(self, queue: str) -> str | None:
        q = self._queues.get(queue)
        return None if q is None else q.cohort

    def used(self, queue: str, gpu_type: str) -> int:
        return self._usage.get(queue, {}).get(gpu_type, 0)

    def borrowed(self, queue: str) -> int:
        """GPUs the queue uses above its nominal quota, over all GPU types."""
        q = self._queues.get(queue)
        if q is None:
            return 0
        return sum(max(0, used - q.nominal(t)) for t, used in self._usage.get(queue, {}).items())

    def over_nominal(self, queue: str, gpu_type: str) -> int:
        q = self._queues.get(queue)
        if q is None:
            return 0
        return max(0, self.used(queue, gpu_type) - q.nominal(gpu_type))

    def lendable(self, lender: Queue, gpu_type: str) -> int:
        terms = self._queues.get(lender.name) or QueueTerms(lender)
        return self._lend_at(terms, gpu_type, self.used(lender.name, gpu_type))

    def _lend_at(self, queue: QueueTerms, gpu_type: str, used: int) -> int:
        idle = max(0, queue.nominal(gpu_type) - used)
        return idle if queue.lending_limit is None else min(idle, queue.lending_limit)

    def cohort_idle(self, queue: Queue, gpu_type: str) -> int:
        """GPUs of `gpu_type` that the cohort lends and nobody borrows yet (this queue's own excluded)."""
        if queue.cohort is None:
            return 0
        key = (queue.cohort, gpu_type)
        others_lend = self._lendable.get(key, 0) - self.lendable(queue, gpu_type)
        others_borrow = self._borrowed.get(key, 0) - self.over_nominal(queue.name, gpu_type)
        return max(0, others_lend - others_borrow)

    def claimed(self, queue: str, gpu_type: str) -> int:
        q = self._queues.get(queue)
        if q is None or q.cohort is None:
            return 0
        return self._claims.get((q.cohort, gpu_type), {}).get(queue, 0)

    def claim(self, queue_name: str, gpu_type: str, gpus: int) -> None:
        """Keep `gpus` of the queue's idle quota from being lent for the rest of the cycle."""
        q = self._queues.get(queue_name)
        if q is None or q.cohort is None:
            return
        per_queue = self._claims.setdefault((q.cohort, gpu_type), {})
        per_queue[queue_name] = per_queue.get(queue_name, 0) + gpus
        made = self._claims_made
        made[(q.cohort, gpu_type)] = made.get((q.cohort, gpu_type), 0) + 1
        self._changed(queue_name, gpu_type)

    def within_nominal(self, queue_name: str, gpu_type: str, gpus: int) -> bool:
        """Would `gpus` more stay within the queue's nominal quota, counting what it claimed?"""
        q = self._queues.get(queue_name)
        if q is None:
            return False
        held = self.used(queue_name, gpu_type) + self.claimed(queue_name, gpu_type)
        return held + gpus <= q.nominal(gpu_type)

    def _claimed_by_others(self, queue: QueueTerms, gpu_type: str) -> int:
        """Idle quota of the rest of the cohort that their waiting jobs claimed (not lendable)."""
        cohort = queue.cohort
        per_queue = self._claims.get((cohort, gpu_type)) if cohort is not None else None
        if not per_queue or cohort is None:
            return 0
        # Claims and usage of the cohort change its stamp: worked out once per stamp.
        stamp = self._shared_changes.get((True, cohort, gpu_type), 0)
        known = self._claims_seen.get((cohort, gpu_type))
        if known is None or known[0] != stamp:
            held = {
                name: min(gpus, self._lend_at(self._queues[name], gpu_type, self.used(name, gpu_type)))
                for name, gpus in per_queue.items()
            }
            known = self._claims_seen[(cohort, gpu_type)] = (stamp, sum(held.values()), held)
        return known[1] - known[2].get(queue.name, 0)

    def borrowers(self, cohort: str | None, gpu_type: str) -> int:
        """GPUs of `gpu_type` that the cohort's queues use above their quotas."""
        return 0 if cohort is None else self._borrowed.get((cohort, gpu_type), 0)

    def ceiling(self, queue_name: str, gpu_type: str) -> int:
        """The most GPUs of `gpu_type` the queue could ever hold, with every other queue idle."""
        key = (queue_name, gpu_type)
        known = self._ceilings.get(key)
        if known is None:
            known = self._ceilings[key] = self._ceiling(queue_name, gpu_type)
        return known

    def _ceiling(self, queue_name: str, gpu_type: str) -> int:
        queue = self._queues.get(queue_name)
        if queue is None:
            return 0
        nominal = queue.nominal(gpu_type)
        if queue.cohort is None:
            return nominal
        lent = sum(
            self._lend_at(other, gpu_type, 0)
            for other in self._queues.values()
            if other.cohort == queue.cohort and other.name != queue_name
        )
        if queue.borrowing_limit is not None:
            lent = min(lent, queue.borrowing_limit)
        return nominal + lent

    def stamp(self, queue_name: str, gpu_type: str) -> tuple[int, int]:
        """Changes whenever an answer of admit or admit_after for this queue and type may change:
        a charge or claim of that type in its cohort (or the queue itself, without one), or a
        charge of the queue of any type (what it borrows counts all types together)."""
        return (
            self._shared_changes.get(self._sharing(queue_name, gpu_type), 0),
            self._queue_changes.get(queue_name, 0),
        )

    def _sharing(self, queue_name: str, gpu_type: str) -> tuple[bool, str, str]:
        """Who shares the queue's quota of a type: its cohort, or the queue alone."""
        queue = self._queues.get(queue_name)
        if queue is not None and queue.cohort is not None:
            return (True, queue.cohort, gpu_type)
        return (False, queue_name, gpu_type)

    def _changed(self, queue_name: str, gpu_type: str) -> None:
        key = self._sharing(queue_name, gpu_type)
        self._shared_changes[key] = self._shared_changes.get(key, 0) + 1
        self._queue_changes[queue_name] = self._queue_changes.get(queue_name, 0) + 1

    def admit(self, queue_name: str, gpu_type: str, gpus: int) -> Admission:
        key = (queue_name, gpu_type, gpus)
        stamp = self.stamp(queue_name, gpu_type)
        cached = self._admitted.get(key)
        if cached is None or cached[0] != stamp:
            cached = self._admitted[key] = (stamp, self.admit_after(queue_name, gpu_type, gpus, {}))
        return cached[1]

    def admit_after(self, queue_name: str, gpu_type: str, gpus: int, refunds: Mapping[str, int]) -> Admission:
        """Would `gpus` more of `gpu_type` be admitted once `refunds` (queue → GPUs of this type)
        are given back (by preemption)? Changes nothing.

        The cohort stays whole when, after the admission, what its queues borrow is covered by
        what its queues lend: so a queue may use its own quota only while nobody borrows it.
        """
        return self._admission(queue_name, gpu_type, gpus, refunds, True)

    def admits_after(self, queue_name: str, gpu_type: str, gpus: int, refunds: Mapping[str, int]) -> bool:
        """admit_after(...).ok, without working out what a refusal would say or what it borrows:
        for callers that ask only yes or no, often (victim search, las' ranking)."""
        return self._admission(queue_name, gpu_type, gpus, refunds, False).ok

    def _admission(
        self, queue_name: str, gpu_type: str, gpus: int, refunds: Mapping[str, int], explain: bool
    ) -> Admission:
        """admit_after; without `explain`, _ADMITTED or _REFUSED only."""
        queue = self._queues.get(queue_name)
        if queue is None:
            return Admission(False, detail=f"queue {queue_name!r} does not exist") if explain else _REFUSED
        used_before = self.used(queue_name, gpu_type) - refunds.get(queue_name, 0)
        used = used_before + gpus
        nominal = queue.nominal(gpu_type)
        over_before = max(0, used_before - nominal)
        over = max(0, used - nominal) - over_before  # new borrowing
        if queue.cohort is None:
            if not over:
                return _ADMITTED
            if not explain:
                return _REFUSED
            return Admission(
                False, detail=f"queue {queue_name} uses {used_before}/{nominal} {gpu_type}, no cohort"
            )
        key = (queue.cohort, gpu_type)
        lend, borrow = self._lendable.get(key, 0), self._borrowed.get(key, 0)
        if refunds:
            lend_back, borrow_back = self._refunded(queue, gpu_type, refunds)
            lend += lend_back
            borrow += borrow_back
        if queue_name in refunds:  # its own refund changes its share of the totals too
            now_used = self.used(queue_name, gpu_type)
            lend += self._lend_at(queue, gpu_type, used_before) - self._lend_at(queue, gpu_type, now_used)
            borrow += over_before - max(0, now_used - nominal)
        lend += self._lend_at(queue, gpu_type, used) - self._lend_at(queue, gpu_type, used_before)
        borrow += over
        if over:
            lend -= self._claimed_by_others(queue, gpu_type)  # new borrowing may not take claimed quota
        if borrow > lend:
            if not explain:
                return _REFUSED
            # Shown to the job's team: its own queue by name, the others only as 'its cohort'.
            if over == 0:
                detail = (
                    f"queue {queue_name} uses {used_before}/{nominal} {gpu_type}; "
                    "its idle quota is lent out to its cohort and must be reclaimed"
                )
            else:
                detail = (
                    f"queue {queue_name} uses {used_before}/{nominal} {gpu_type}; needs {over} more, "
                    f"its cohort lends {max(0, over - (borrow - lend))}"
                )
            return Admission(False, detail=detail)
        if over and queue.borrowing_limit is not None:
            # What it borrows of every type, with this type's part as it is after the refunds.
            borrowed_total = (
                self.borrowed(queue_name) - max(0, self.used(queue_name, gpu_type) - nominal) + over_before
            )
            if borrowed_total + over > queue.borrowing_limit:
                if not explain:
                    return _REFUSED
                return Admission(
                    False,
                    detail=f"queue {queue_name} would borrow {plural(borrowed_total + over, 'GPU')}, "
                    f"limit {queue.borrowing_limit}",
                )
        return Admission(True, borrowed=over) if over and explain else _ADMITTED

    def _refunded(self, queue: QueueTerms, gpu_type: str, refunds: Mapping[str, int]) -> tuple[int, int]:
        """How much more the rest of the queue's cohort lends, and less it borrows, once `refunds`
        are given back (the queue's own refund left out): worked out once per cohort, type and
        refunds while the cohort's usage of that type stays the same (a claim does not change it).
        `refunds` is recognised by identity: a caller must not change a mapping after passing it
        (the cycle builds each once)."""
        cohort = queue.cohort
        assert cohort is not None
        # The cohort's changes of that type less its claims: its charges, which alone change usage.
        changes = self._shared_changes.get((True, cohort, gpu_type), 0)
        stamp = changes - self._claims_made.get((cohort, gpu_type), 0)
        known = self._refunds_seen.get((cohort, gpu_type))
        if known is None or known[0] is not refunds or known[1] != stamp:
            per_queue: dict[str, tuple[int, int]] = {}
            lend = borrow = 0
            for name, back in refunds.items():
                other = self._queues.get(name)
                if other is None or other.cohort != cohort or not back:
                    continue
                now_used = self.used(name, gpu_type)
                nominal = other.nominal(gpu_type)
                dl = self._lend_at(other, gpu_type, now_used - back) - self._lend_at(
                    other, gpu_type, now_used
                )
                db = max(0, now_used - back - nominal) - max(0, now_used - nominal)
                per_queue[name] = (dl, db)
                lend += dl
                borrow += db
            known = self._refunds_seen[(cohort, gpu_type)] = (refunds, stamp, lend, borrow, per_queue)
        _, _, lend, borrow, per_queue = known
        own = per_queue.get(queue.name)
        return (lend - own[0], borrow - own[1]) if own is not None else (lend, borrow)

    def charge(self, queue_name: str, gpu_type: str, gpus: int) -> None:
        self._changed(queue_name, gpu_type)
        per_type = self._usage.setdefault(queue_name, {})
        before = per_type.get(gpu_type, 0)
        after = per_type[gpu_type] = before + gpus
        queue = self._queues.get(queue_name)
        if queue is not None and queue.cohort is not None:
            # The cohort totals move by what this queue lends and borrows after, less before.
            key = (queue.cohort, gpu_type)
            nominal = queue.nominal(gpu_type)
            lend = self._lend_at(queue, gpu_type, after) - self._lend_at(queue, gpu_type, before)
            self._lendable[key] = self._lendable.get(key, 0) + lend
            self._borrowed[key] = (
                self._borrowed.get(key, 0) + max(0, after - nominal) - max(0, before - nominal)
            )

    def refund(self, queue: str, gpu_type: str, gpus: int) -> None:
        self.charge(queue, gpu_type, -gpus)
