"""Step 5, preempt: the cheapest set of running jobs whose GPUs let a waiting job start.

Who may be a victim of `job` (all must be preemptible, past their minimum runtime, and not yet
preempted `max_preemptions_per_job` times, so nothing thrashes):
  - a job of a lower priority class in the same queue, if job's class preempts lower ones;
  - in another queue: a job of a queue that borrows this GPU type (reclaim), or of a lower
    class when job's class preempts lower ones — in both cases only if job's queue then stays
    within its nominal quota, so no queue preempts others to borrow;
  - with service preemption (Tiresias' insight: a job that has run long is likely to run
    longer still), a job of the same or a lower class whose attained GPU-seconds put it in a
    higher service level than `job`, in the same queue, in a borrowing queue, or anywhere if
    job's queue stays within its quota. The per-job preemption cap bounds what it can cost.
Heuristic (as Kueue's): take candidates cheapest first — lowest class, then least work lost since
their checkpoint, then biggest — until the job fits; then give back, in reverse, those it does not
need. If it does not fit with every candidate gone, nobody is preempted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.model.capacity import CapacityError, CapacityIndex
from scheduler.model.cluster import PoolKey
from scheduler.model.job import Job
from scheduler.model.snapshot import ClusterSnapshot, RunningJob
from scheduler.policy.config import PolicyConfig
from scheduler.policy.order import las_level
from scheduler.policy.place import find_allocation
from scheduler.policy.quota import QuotaLedger

_PRIORITY, _RECLAIM, _SERVICE = 0, 1, 2  # why a candidate may be preempted


@dataclass(frozen=True, slots=True)
class Victims:
    jobs: tuple[RunningJob, ...]
    reason: str


def attained(r: RunningJob, now: float) -> float:
    """GPU-seconds the job has had: earlier attempts plus the current one."""
    return r.job.attained_gpu_s + r.gpus * max(0.0, now - r.started_at)


def protected_for_s(r: RunningJob, config: PolicyConfig) -> float:
    """How long after (re)starting a job may not be preempted.

    Exponential backoff: each earlier preemption multiplies the protection, so a job that keeps
    being chosen gets ever longer uninterrupted runs (nothing thrashes, and long jobs still finish)
    without ever being protected for good.
    """
    backoff = config.preemption_backoff**r.job.preemption_count
    return max(r.job.spec.min_runtime_s, config.default_min_runtime_s * backoff)


def can_be_victim(r: RunningJob, now: float, config: PolicyConfig) -> bool:
    spec = r.job.spec
    if not spec.preemptible or r.preempting:
        return False
    if r.job.preemption_count >= config.max_preemptions_per_job:
        return False
    return now - r.started_at >= protected_for_s(r, config)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A running job that may be preempted, with what the victim choice needs, computed once a cycle."""

    running: RunningJob
    value: int  # its priority class value
    level: int  # its service level (attained GPU-seconds)
    cost: tuple[float, ...]  # cheapest first: class, work lost since checkpoint, size, start


def victim_candidates(
    snapshot: ClusterSnapshot, running: Sequence[RunningJob], now: float, config: PolicyConfig
) -> list[Candidate]:
    """The pool's preemptible jobs, cheapest first."""
    out = []
    th = config.las_thresholds_gpu_s
    for r in running:
        if not can_be_victim(r, now, config):
            continue
        value = snapshot.priority_value(r.job)
        cost = (float(value), r.work_at_risk_s(now) * r.gpus, -float(r.gpus), r.started_at)
        out.append(Candidate(r, value, las_level(attained(r, now), th), cost))
    out.sort(key=lambda c: c.cost)
    return out


def choose_victims(
    snapshot: ClusterSnapshot,
    capacity: CapacityIndex,
    ledger: QuotaLedger,
    job: Job,
    pool: PoolKey,
    pool_candidates: Sequence[Candidate],
    taken: set[str],
    now: float,
    config: PolicyConfig,
) -> Victims | None:
    spec = job.spec
    value = snapshot.priority_value(job)
    pc = snapshot.priority_classes.get(spec.priority)
    preempts_lower = pc is not None and pc.preempts_lower
    queue = snapshot.queues.get(spec.queue)
    if queue is None:
        return None
    within_nominal = ledger.used(spec.queue, pool.gpu_type) + spec.gpus <= queue.nominal(pool.gpu_type)
    level = las_level(job.attained_gpu_s, config.las_thresholds_gpu_s) if config.service_preemption else 0

    candidates: list[tuple[RunningJob, int]] = []
    borrowing: dict[str, bool] = {}
    for c in pool_candidates:
        r = c.running
        if r.id in taken:
            continue
        same_queue = r.queue == spec.queue
        lower = preempts_lower and c.value < value
        lends_back = False
        if not same_queue:
            lends_back = borrowing.get(r.queue)  # type: ignore[assignment]
            if lends_back is None:
                lends_back = borrowing[r.queue] = ledger.over_nominal(r.queue, pool.gpu_type) > 0
        if lower and (same_queue or within_nominal):
            why = _PRIORITY
        elif not same_queue and within_nominal and lends_back:
            why = _RECLAIM
        elif (
            config.service_preemption
            and c.value <= value
            and c.level > level
            and (same_queue or lends_back or within_nominal)
        ):
            why = _SERVICE
        else:
            continue
        candidates.append((r, why))
        if len(candidates) >= config.max_victims:
            break
    if not candidates:
        return None
    pool_free = capacity.pools[pool].free_gpus if pool in capacity.pools else 0
    if pool_free + sum(r.gpus for r, _ in candidates) < spec.gpus:
        return None  # not enough GPUs even with every candidate gone

    chosen: list[tuple[RunningJob, int]] = []
    scratch = capacity
    fits = False
    for r, why in candidates:
        try:
            scratch = scratch.release(r.allocation)
        except CapacityError:
            continue
        chosen.append((r, why))
        if _feasible(scratch, ledger, job, pool, [c for c, _ in chosen]):
            fits = True
            break
    if not fits:
        return None
    # Give back, in reverse, every victim the job can do without.
    for r, _why in reversed(list(chosen)):
        rest = [c for c, _ in chosen if c.id != r.id]
        try:
            without = scratch.allocate(r.allocation)
        except CapacityError:
            continue
        if _feasible(without, ledger, job, pool, rest):
            scratch = without
            chosen = [(c, w) for c, w in chosen if c.id != r.id]
    kinds = sorted({why for _, why in chosen})
    words = {
        _PRIORITY: f"priority: {spec.priority} job {job.id} needs its GPUs",
        _RECLAIM: f"reclaim: queue {spec.queue} takes back its lent {pool.gpu_type} quota for {job.id}",
        _SERVICE: f"service: {job.id} has attained less GPU time",
    }
    return Victims(jobs=tuple(c for c, _ in chosen), reason="; ".join(words[k] for k in kinds))


def _feasible(
    capacity: CapacityIndex, ledger: QuotaLedger, job: Job, pool: PoolKey, victims: Sequence[RunningJob]
) -> bool:
    """Would `job` fit and be admitted with `victims` gone? (Changes nothing.)"""
    spec = job.spec
    if find_allocation(capacity, pool, spec.nodes, spec.gpus_per_node) is None:
        return False
    if ledger.admit(spec.queue, pool.gpu_type, spec.gpus).ok:
        return True  # refunds only lower usage: admitted now, admitted with them
    refunds: dict[str, int] = {}
    for v in victims:
        if v.gpu_type == pool.gpu_type:
            refunds[v.queue] = refunds.get(v.queue, 0) + v.gpus
    return ledger.admit_after(spec.queue, pool.gpu_type, spec.gpus, refunds).ok
