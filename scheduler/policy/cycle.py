"""decide(snapshot, config, now) -> Plan: one scheduling cycle, the same in controller and simulator.

The corral policy, in phases:
  1. Order the pending jobs: merge queue heads by score (class, aging, fair share).
  2. For each job, up to the scan depth:
     a. reject what no node of this cluster could ever hold;
     b. admit it against its queue's quota (borrowing from the cohort if allowed);
     c. place it on free GPUs, honouring any backfill reservation of its pool;
     d. if it does not fit: wait for jobs already leaving, else preempt victims, else become
        its pool's head and take a reservation (EASY backfill), else wait with a reason.
  3. Stop early when nothing is free and no more preemption may be tried; the jobs not examined
     wait behind the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scheduler.model.capacity import CapacityError, CapacityIndex
from scheduler.model.cluster import PoolKey
from scheduler.model.job import Job, JobSpec, PendingCode, PendingReason
from scheduler.model.plan import Allocation, Decision, Place, Plan, Preempt, Reject, Reserve
from scheduler.model.snapshot import ClusterSnapshot, RunningJob
from scheduler.policy import backfill, explain
from scheduler.policy.config import PolicyConfig
from scheduler.policy.order import FairShare, QueueMerger, las_level, pending_key
from scheduler.policy.place import candidate_pools, find_allocation, residency_check
from scheduler.policy.preempt import Candidate, choose_victims, victim_candidates
from scheduler.policy.quota import QuotaLedger


@dataclass
class CycleState:
    """Scratch state of one cycle: what is free, used and decided so far. Never leaves decide()."""

    snapshot: ClusterSnapshot
    config: PolicyConfig
    now: float
    capacity: CapacityIndex
    ledger: QuotaLedger
    decisions: list[Decision] = field(default_factory=list)
    pending: dict[str, PendingReason] = field(default_factory=dict)
    reservations: dict[PoolKey, backfill.Reservation] = field(default_factory=dict)
    unreserved: CapacityIndex | None = None  # capacity without reserved nodes (for long backfill jobs)
    victims_taken: set[str] = field(default_factory=set)
    no_reservation: set[tuple[PoolKey, int, int, bool]] = field(default_factory=set)
    preemptors: int = 0
    preempt_attempts: int = 0
    version: int = 0  # bumps on every placement: cached reasons and fit checks expire
    _pools_for: dict[tuple[str, str], list[PoolKey]] = field(default_factory=dict)
    _never: dict[tuple[str, str, str, int, int], PendingReason | None] = field(default_factory=dict)
    _no_fit: dict[PoolKey, list[tuple[int, int]]] = field(default_factory=dict)
    _reasons: dict[tuple[str, str, int, int, int], PendingReason] = field(default_factory=dict)
    _no_victims: dict[tuple[PoolKey, str, str], list[tuple[int, int]]] = field(default_factory=dict)
    _running_by_pool: dict[PoolKey, list[RunningJob]] | None = None
    _candidates: dict[PoolKey, list[Candidate]] = field(default_factory=dict)
    _after_leavers: dict[PoolKey, tuple[int, CapacityIndex]] = field(default_factory=dict)
    _leaving_by_pool: dict[PoolKey, list[RunningJob]] | None = None

    @classmethod
    def start(cls, snapshot: ClusterSnapshot, config: PolicyConfig, now: float) -> CycleState:
        return cls(
            snapshot=snapshot,
            config=config,
            now=now,
            capacity=snapshot.capacity,
            ledger=QuotaLedger(snapshot.queues, snapshot.queue_usage),
        )

    def epoch(self) -> tuple[int, int, int]:
        """Changes whenever a decision could change the outcome for a later job."""
        return (self.version, self.preemptors, len(self.reservations))

    def pools_for(self, spec: JobSpec) -> list[PoolKey]:
        key = (spec.data_region, spec.gpu_type)
        pools = self._pools_for.get(key)
        if pools is None:
            pools = self._pools_for[key] = candidate_pools(self.capacity, spec)
        return pools

    def never_fits(self, spec: JobSpec) -> PendingReason | None:
        """Why no node of the cluster, or no quota its queue could ever get, could hold the job."""
        key = (spec.queue, spec.data_region, spec.gpu_type, spec.nodes, spec.gpus_per_node)
        if key not in self._never:
            self._never[key] = explain.never_fits(self.snapshot, spec) or explain.beyond_quota(
                self.snapshot, self.ledger, spec
            )
        return self._never[key]

    def find(self, pool: PoolKey, spec: JobSpec, capacity: CapacityIndex) -> Allocation | None:
        """find_allocation, remembering shapes that fail on the full index in this cycle.

        Capacity only shrinks during a cycle, so a gang that did not fit will not fit later,
        nor will any gang at least as wide on each node and at least as many nodes.
        """
        n, g = spec.nodes, spec.gpus_per_node
        failed = self._no_fit.get(pool)
        if failed and any(n >= fn and g >= fg for fn, fg in failed):
            return None
        alloc = find_allocation(capacity, pool, n, g)
        if alloc is None and capacity is self.capacity:
            self._no_fit.setdefault(pool, []).append((n, g))
        return alloc

    def resources_reason(self, spec: JobSpec) -> PendingReason:
        key = (spec.data_region, spec.gpu_type, spec.nodes, spec.gpus_per_node, self.version)
        reason = self._reasons.get(key)
        if reason is None:
            reason = self._reasons[key] = explain.resources(self.capacity, spec)
        return reason

    def running_in(self, pool: PoolKey) -> list[RunningJob]:
        if self._running_by_pool is None:
            by_pool: dict[PoolKey, list[RunningJob]] = {}
            for r in self.snapshot.running.values():
                by_pool.setdefault(r.pool, []).append(r)
            self._running_by_pool = by_pool
        return self._running_by_pool.get(pool, [])

    def candidates_in(self, pool: PoolKey) -> list[Candidate]:
        found = self._candidates.get(pool)
        if found is None:
            found = victim_candidates(self.snapshot, self.running_in(pool), self.now, self.config)
            self._candidates[pool] = found
        return found

    def top_level(self, pool: PoolKey) -> int:
        """The highest service level among the pool's running jobs that could be preempted."""
        return max((c.level for c in self.candidates_in(pool)), default=-1)

    def leaving_in(self, pool: PoolKey) -> list[RunningJob]:
        """Jobs of the pool in their preemption grace period: their GPUs free up soon."""
        if self._leaving_by_pool is None:
            self.running_in(pool)
            assert self._running_by_pool is not None
            self._leaving_by_pool = {
                key: [r for r in rs if r.preempting] for key, rs in self._running_by_pool.items()
            }
        return self._leaving_by_pool.get(pool, [])

    def place(self, job: Job, pool: PoolKey, allocation: Allocation, borrowed: int, backfilled: bool) -> None:
        self.capacity = self.capacity.allocate(allocation)
        if self.unreserved is not None:
            try:
                self.unreserved = self.unreserved.allocate(allocation)
            except CapacityError:
                # It used reserved nodes (it ends before the reservation): hide them all again.
                self.unreserved = self.capacity.without_nodes(self._reserved_nodes())
        self.ledger.charge(job.spec.queue, pool.gpu_type, allocation.gpus)
        self.version += 1
        self.decisions.append(
            Place(
                job_id=job.id,
                allocation=allocation,
                borrowed_gpus=borrowed,
                backfilled=backfilled,
                residency=residency_check(job.spec, allocation, self.snapshot.nodes),
                reason="backfill" if backfilled else "fits",
            )
        )

    def reserve(self, reservation: backfill.Reservation) -> None:
        self.reservations[reservation.pool] = reservation
        self.unreserved = self.capacity.without_nodes(self._reserved_nodes())
        self.decisions.append(
            Reserve(
                job_id=reservation.job_id, nodes=tuple(sorted(reservation.nodes)), start=reservation.start
            )
        )

    def _reserved_nodes(self) -> set[str]:
        return {n for r in self.reservations.values() for n in r.nodes}

    def wait(self, job: Job, reason: PendingReason) -> None:
        self.pending[job.id] = reason


def decide_corral(snapshot: ClusterSnapshot, config: PolicyConfig, now: float) -> Plan:
    """The default policy (see the module docstring for its phases)."""
    state = CycleState.start(snapshot, config, now)
    fair = FairShare(snapshot, config)
    priority_values = {name: pc.value for name, pc in snapshot.priority_classes.items()}
    # 1. Order.
    merger = QueueMerger(snapshot, config, now, pending_key(config, priority_values), fair)
    examined = 0
    fallback = PendingReason(PendingCode.PRIORITY, "behind higher-ordered jobs")
    outcomes: dict[tuple[object, ...], tuple[tuple[int, int, int], PendingReason]] = {}
    for job in merger:
        if examined >= config.scan_depth:
            break
        examined += 1
        # 3. Nothing is free: only a preemption could start a job. Stop once no more may be
        # tried; until then pass quickly over the jobs that could not preempt anyone.
        if state.capacity.free_gpus() == 0:
            if not _may_preempt(state):
                fallback = PendingReason(PendingCode.RESOURCES, "no free GPUs")
                break
            if not state.never_fits(job.spec) and not any(
                _could_preempt(state, job, pool) for pool in state.pools_for(job.spec)
            ):
                state.wait(job, state.resources_reason(job.spec))
                continue
        # A job just like one that had to wait, with nothing changed since, waits for the same reason.
        key = _outcome_key(state, job)
        epoch = state.epoch()
        known = outcomes.get(key)
        if known is not None and known[0] == epoch:
            state.wait(job, known[1])
            continue
        # 2. Consider this job.
        placed_pool = _consider(state, job)
        if placed_pool is not None:
            fair.add(job.spec.queue, placed_pool.gpu_type, job.spec.gpus)
        elif state.epoch() == epoch and job.id in state.pending:
            outcomes[key] = (epoch, state.pending[job.id])
    return Plan(decisions=tuple(state.decisions), pending=state.pending, examined=examined, fallback=fallback)


def _outcome_key(state: CycleState, job: Job) -> tuple[object, ...]:
    """Everything about a job that steps 2a-2d look at, except its identity."""
    spec, config, now = job.spec, state.config, state.now
    return (
        spec.queue,
        spec.priority,
        spec.data_region,
        spec.gpu_type,
        spec.nodes,
        spec.gpus_per_node,
        # The time limit matters only through which reservations the job would end before.
        tuple(backfill.ends_before(spec, now, r.start) for r in state.reservations.values()),
        las_level(job.attained_gpu_s, config.las_thresholds_gpu_s),
        now - job.submitted_at >= config.reserve_unbounded_after_s,  # may take an unbounded reservation
    )


def _may_preempt(state: CycleState) -> bool:
    cfg = state.config
    return (
        cfg.preemption
        and state.preemptors < cfg.max_preemptors_per_cycle
        and state.preempt_attempts < 4 * cfg.max_preemptors_per_cycle
    )


def _consider(state: CycleState, job: Job) -> PoolKey | None:
    """Steps 2a-2d for one job; returns the pool it was placed in, if any."""
    spec, now = job.spec, state.now
    # 2a. Reject the impossible.
    impossible = state.never_fits(spec)
    if impossible is not None:
        state.decisions.append(Reject(job_id=job.id, reason=impossible.message))
        return None
    pools = state.pools_for(spec)
    quota_reason: PendingReason | None = None
    admitted: list[tuple[PoolKey, int]] = []
    # 2b. Admit, then 2c. place.
    for pool in pools:
        admission = state.ledger.admit(spec.queue, pool.gpu_type, spec.gpus)
        if not admission.ok:
            quota_reason = PendingReason(PendingCode.QUOTA_EXCEEDED, admission.detail)
            continue
        admitted.append((pool, admission.borrowed))
        placed = _try_place(state, job, pool, admission.borrowed)
        if placed:
            return pool
    # 2d. It waits: for leaving jobs, by preempting, or holding a reservation.
    for pool in pools:
        leaving = _waiting_for_leavers(state, job, pool)
        if leaving:
            state.wait(
                job, PendingReason(PendingCode.RESERVED, f"waiting for {leaving} preempted jobs to exit")
            )
            return None
    if state.config.preemption and _may_preempt(state):
        for pool in pools:
            if _try_preempt(state, job, pool):
                return None
    if not admitted:
        state.wait(
            job, quota_reason or PendingReason(PendingCode.QUOTA_EXCEEDED, "no quota for this GPU type")
        )
        return None
    if state.config.backfill:
        for pool, _ in admitted:
            if pool in state.reservations:
                continue
            unbounded_ok = now - job.submitted_at >= state.config.reserve_unbounded_after_s
            memo = (pool, spec.nodes, spec.gpus_per_node, unbounded_ok)
            if memo in state.no_reservation:
                continue
            reservation = backfill.plan_reservation(
                state.capacity, pool, spec, job.id, state.running_in(pool), now, unbounded_ok
            )
            if reservation is None:
                state.no_reservation.add(memo)
            else:
                state.reserve(reservation)
                # Relative: the same words on the simulator's virtual clock and the live wall clock.
                when = (
                    "when running jobs end"
                    if reservation.start is None
                    else f"from t={reservation.start:.0f} (in {max(0.0, reservation.start - now):.0f} s)"
                )
                detail = f"holds {len(reservation.nodes)} nodes {when}; {state.resources_reason(spec).detail}"
                state.wait(job, PendingReason(PendingCode.RESERVED, detail))
                return None
    for pool, _ in admitted:
        held = state.reservations.get(pool)
        if held is not None and state.find(pool, spec, state.capacity) is not None:
            # It would fit but for the GPUs held for an earlier job (Slurm says 'Priority' here).
            when = "until its running jobs end" if held.start is None else f"from t={held.start:.0f}"
            detail = f"fits, but the free nodes are reserved for {held.job_id} {when}"
            state.wait(job, PendingReason(PendingCode.PRIORITY, detail))
            return None
    state.wait(job, state.resources_reason(spec))
    return None


def _try_place(state: CycleState, job: Job, pool: PoolKey, borrowed: int) -> bool:
    spec = job.spec
    reservation = state.reservations.get(pool)
    if reservation is None:
        alloc = state.find(pool, spec, state.capacity)
        if alloc is None:
            return False
        state.place(job, pool, alloc, borrowed, backfilled=False)
        return True
    # The pool's head holds a reservation: backfill around it.
    if backfill.ends_before(spec, state.now, reservation.start):
        alloc = state.find(pool, spec, state.capacity)
    else:
        assert state.unreserved is not None
        alloc = state.find(pool, spec, state.unreserved)
    if alloc is None:
        return False
    state.place(job, pool, alloc, borrowed, backfilled=True)
    return True


def _waiting_for_leavers(state: CycleState, job: Job, pool: PoolKey) -> int:
    """How many preempted jobs (still in their grace period) must leave for `job` to fit; 0 if not enough."""
    leaving = state.leaving_in(pool)
    if not leaving:
        return 0
    cached = state._after_leavers.get(pool)
    if cached is not None and cached[0] == state.version:
        scratch = cached[1]
    else:
        scratch = state.capacity
        for r in leaving:
            try:
                scratch = scratch.release(r.allocation)
            except CapacityError:
                continue
        state._after_leavers[pool] = (state.version, scratch)
    if find_allocation(scratch, pool, job.spec.nodes, job.spec.gpus_per_node) is None:
        return 0
    return len(leaving)


def _could_preempt(state: CycleState, job: Job, pool: PoolKey) -> bool:
    """Cheap necessary condition for choose_victims to find anything."""
    spec = job.spec
    pc = state.snapshot.priority_classes.get(spec.priority)
    if pc is not None and pc.preempts_lower:
        return True  # may preempt lower classes (of its own queue at least)
    if state.config.service_preemption and state.top_level(pool) > las_level(
        job.attained_gpu_s, state.config.las_thresholds_gpu_s
    ):
        return True
    queue = state.snapshot.queues.get(spec.queue)
    if queue is None:
        return False
    within = state.ledger.used(spec.queue, pool.gpu_type) + spec.gpus <= queue.nominal(pool.gpu_type)
    return within and state.ledger.borrowers(queue.cohort, pool.gpu_type) > 0


def _try_preempt(state: CycleState, job: Job, pool: PoolKey) -> bool:
    if not _could_preempt(state, job, pool):
        return False
    # Same pool, queue and class see the same victims; a wider gang than one that failed fails too.
    memo_key = (pool, job.spec.queue, job.spec.priority)
    n, g = job.spec.nodes, job.spec.gpus_per_node
    failed = state._no_victims.get(memo_key)
    if failed and any(n >= fn and g >= fg for fn, fg in failed):
        return False
    state.preempt_attempts += 1
    victims = choose_victims(
        state.snapshot,
        state.capacity,
        state.ledger,
        job,
        pool,
        state.candidates_in(pool),
        state.victims_taken,
        state.now,
        state.config,
    )
    if victims is None:
        state._no_victims.setdefault(memo_key, []).append((n, g))
        return False
    state.preemptors += 1
    for v in victims.jobs:
        state.victims_taken.add(v.id)
        state.decisions.append(Preempt(job_id=v.id, for_job=job.id, reason=victims.reason))
    state.wait(
        job, PendingReason(PendingCode.RESERVED, f"preempting {len(victims.jobs)} jobs: {victims.reason}")
    )
    return True
