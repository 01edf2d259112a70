"""Step 2, admit: quota per queue and GPU type, with borrowing of a cohort's idle quota.

A queue may use its nominal quota of each GPU type. Above that it borrows what other queues of
its cohort leave idle (each lends at most its lending limit), and its borrowed GPUs (all types
together) stay within its borrowing limit. A queue without a cohort never exceeds its quota.
Cohort totals are kept incrementally so that an admission check is O(1) however big the cohort.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from scheduler.model.queue import Queue


@dataclass(frozen=True, slots=True)
class Admission:
    ok: bool
    borrowed: int = 0  # GPUs of this admission above the queue's nominal quota
    detail: str = ""


class QuotaLedger:
    """Per-queue GPU usage for one cycle; `admit` checks, `charge`/`refund` record."""

    def __init__(self, queues: Mapping[str, Queue], usage: Mapping[str, Mapping[str, int]]) -> None:
        self._queues = queues
        self._usage: dict[str, dict[str, int]] = {q: dict(u) for q, u in usage.items()}
        self._lendable: dict[tuple[str, str], int] = {}  # (cohort, type) → idle quota lent out
        self._borrowed: dict[tuple[str, str], int] = {}  # (cohort, type) → GPUs used above quotas
        self._admitted: dict[tuple[str, str, int], Admission] = {}  # memo until the next charge
        types = {t for q in queues.values() for t in q.quota} | {t for u in usage.values() for t in u}
        for q in queues.values():
            if q.cohort is None:
                continue
            for t in types:
                key = (q.cohort, t)
                self._lendable[key] = self._lendable.get(key, 0) + self.lendable(q, t)
                self._borrowed[key] = self._borrowed.get(key, 0) + self.over_nominal(q.name, t)

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
        idle = max(0, lender.nominal(gpu_type) - self.used(lender.name, gpu_type))
        if lender.lending_limit is not None:
            idle = min(idle, lender.lending_limit)
        return idle

    def cohort_idle(self, queue: Queue, gpu_type: str) -> int:
        """GPUs of `gpu_type` that the rest of the queue's cohort lends and nobody else borrows."""
        if queue.cohort is None:
            return 0
        key = (queue.cohort, gpu_type)
        others_lend = self._lendable.get(key, 0) - self.lendable(queue, gpu_type)
        others_borrow = self._borrowed.get(key, 0) - self.over_nominal(queue.name, gpu_type)
        return max(0, others_lend - others_borrow)

    def borrowers(self, cohort: str | None, gpu_type: str) -> int:
        """GPUs of `gpu_type` that the cohort's queues use above their quotas."""
        return 0 if cohort is None else self._borrowed.get((cohort, gpu_type), 0)

    def admit(self, queue_name: str, gpu_type: str, gpus: int) -> Admission:
        key = (queue_name, gpu_type, gpus)
        cached = self._admitted.get(key)
        if cached is None:
            cached = self._admitted[key] = self._admit(queue_name, gpu_type, gpus)
        return cached

    def _admit(self, queue_name: str, gpu_type: str, gpus: int) -> Admission:
        queue = self._queues.get(queue_name)
        if queue is None:
            return Admission(False, detail=f"queue {queue_name!r} does not exist")
        used = self.used(queue_name, gpu_type)
        nominal = queue.nominal(gpu_type)
        over = max(0, used + gpus - nominal) - max(0, used - nominal)  # new borrowing
        if over == 0:
            return Admission(True)
        if queue.cohort is None:
            return Admission(False, detail=f"queue {queue_name} uses {used}/{nominal} {gpu_type}, no cohort")
        idle = self.cohort_idle(queue, gpu_type)
        if over > idle:
            return Admission(
                False,
                detail=f"queue {queue_name} uses {used}/{nominal} {gpu_type}; needs {over} more, "
                f"cohort {queue.cohort} lends {idle}",
            )
        if queue.borrowing_limit is not None and self.borrowed(queue_name) + over > queue.borrowing_limit:
            return Admission(
                False,
                detail=f"queue {queue_name} would borrow {self.borrowed(queue_name) + over} GPUs, "
                f"limit {queue.borrowing_limit}",
            )
        return Admission(True, borrowed=over)

    def charge(self, queue_name: str, gpu_type: str, gpus: int) -> None:
        self._admitted.clear()
        queue = self._queues.get(queue_name)
        key = (queue.cohort, gpu_type) if queue is not None and queue.cohort is not None else None
        if key is not None and queue is not None:
            self._lendable[key] = self._lendable.get(key, 0) - self.lendable(queue, gpu_type)
            self._borrowed[key] = self._borrowed.get(key, 0) - self.over_nominal(queue_name, gpu_type)
        per_type = self._usage.setdefault(queue_name, {})
        per_type[gpu_type] = per_type.get(gpu_type, 0) + gpus
        if key is not None and queue is not None:
            self._lendable[key] += self.lendable(queue, gpu_type)
            self._borrowed[key] += self.over_nominal(queue_name, gpu_type)

    def refund(self, queue: str, gpu_type: str, gpus: int) -> None:
        self.charge(queue, gpu_type, -gpus)
