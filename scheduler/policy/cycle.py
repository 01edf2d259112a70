"""decide(snapshot, config, now) -> Plan: one scheduling cycle, the same in controller and simulator.

The corral policy, in phases:
  1. Order the pending jobs: merge queue heads by score (class, aging, fair share).
  2. For each job, up to the scan depth (a task of a job array already running as many tasks as
     its `%N` cap allows waits as JobArrayTaskLimit, before any of these and without counting
     against the depth; the Plan names the capped arrays for their tasks no cycle reached):
     a. reject what no node of this cluster could ever hold;
     b. admit it against its queue's quota (borrowing from the cohort if allowed);
     c. place it on free GPUs, honouring any backfill reservation of its pool;
     d. if it does not fit: wait for jobs already leaving (holding the GPUs it will need, so
        that later jobs cannot take them), else preempt victims, else become its pool's head
        and take a reservation (EASY backfill), else wait with a reason.
  3. Stop early when nothing is free and no more preemption may be tried; the jobs not examined
     wait behind the others.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from scheduler.model.capacity import CapacityError, CapacityIndex
from scheduler.model.cluster import PoolKey
from scheduler.model.job import Job, JobSpec, PendingCode, PendingReason
from scheduler.model.pending_shapes import PendingShapes, Shape
from scheduler.model.plan import Allocation, Decision, NodeAllocation, Place, Plan, Preempt, Reject, Reserve
from scheduler.model.queue import PriorityClass, Queue
from scheduler.model.snapshot import ClusterSnapshot, PoolShape, RunningChange, RunningJob
from scheduler.policy import backfill, explain
from scheduler.policy.config import PolicyConfig
from scheduler.policy.group_walk import GroupMerger, Outcome
from scheduler.policy.order import (
    FairShare,
    QueueMerger,
    corral_static,
    las_level,
    order_signature,
    pending_key,
)
from scheduler.policy.place import candidate_pools, find_allocation, residency_check
from scheduler.policy.pool_memo import PoolMemo, change_between
from scheduler.policy.preempt import (
    CUT,
    LEFT_OUT,
    NO_VICTIM_NEEDED,
    CandidateScan,
    VictimCandidates,
    Victims,
    rescan_candidates,
    scan_candidates,
    search_victims,
)
from scheduler.policy.quota import QuotaLedger
from scheduler.policy.words import plural

_T = TypeVar("_T")
_Epoch = int  # CycleState.epoch()


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
    taken_gpus: dict[str, dict[str, int]] = field(default_factory=dict)  # type → queue → victims' GPUs
    # type → queue → the change of its usage once this cycle's victims are gone and their preemptors
    # started: victims' GPUs less preemptors' (see preempt.choose_victims' `refunds`)
    preempted_refunds: dict[str, dict[str, int]] = field(default_factory=dict)
    victims_in: dict[PoolKey, int] = field(default_factory=dict)  # this cycle's victims per pool
    no_reservation: set[tuple[PoolKey, int, int, bool]] = field(default_factory=set)
    preemptors: int = 0
    preempt_attempts: int = 0
    claims: int = 0  # quota claims made (see quota.py): each may change a later job's admission
    placed: int = 0
    # Until when the victim candidates of every pool asked about so far stay as they are (a
    # protection ends, a service level is crossed), while the running jobs do not change.
    candidates_valid_until: float = math.inf
    borrowing_placements: int = 0  # placements on borrowed quota (see victims_for)
    # victims_for's failed searches, as of (preemptors, borrowing_placements) `_failed_at`
    _failed: dict[tuple[PoolKey, str, str, int], list[tuple[int, int, bool]]] = field(default_factory=dict)
    _failed_at: tuple[int, int] = (0, 0)
    # victims_for's last search that found victims, by job and pool: with `changes` and the very
    # capacity index it searched (see victims_for)
    _found: dict[tuple[str, PoolKey], tuple[int, CapacityIndex, Victims, int]] = field(default_factory=dict)
    version: int = 0  # bumps whenever `capacity` shrinks: cached reasons and fit checks expire
    changes: int = 0  # bumps with version, preemptors, reservations and claims: see epoch()
    _pools_for: dict[tuple[str, str], list[PoolKey]] = field(default_factory=dict)
    _never: dict[tuple[str, str, str, int, int], PendingReason | None] = field(default_factory=dict)
    _no_fit: dict[PoolKey, list[tuple[int, int]]] = field(default_factory=dict)
    _reasons: dict[tuple[str, str, int, int, int], PendingReason] = field(default_factory=dict)
    _no_victims: dict[tuple[PoolKey, str, str], list[tuple[int, int]]] = field(default_factory=dict)
    _running_by_pool: Mapping[PoolKey, Sequence[RunningJob]] | None = None
    _drain_order: dict[PoolKey, list[RunningJob]] = field(default_factory=dict)
    _candidates: dict[PoolKey, VictimCandidates] = field(default_factory=dict)
    _after_leavers: dict[PoolKey, CapacityIndex] = field(default_factory=dict)
    _no_fit_after_leavers: dict[PoolKey, list[tuple[int, int]]] = field(default_factory=dict)
    _leaving_by_pool: dict[PoolKey, list[RunningJob]] | None = None
    _settling_by_pool: dict[PoolKey, list[NodeAllocation]] | None = None
    _leaving_refunds: dict[str, dict[str, int]] = field(default_factory=dict)
    _admitted_after_leavers: dict[tuple[str, str, int, tuple[int, int]], bool] = field(default_factory=dict)
    _array_running: dict[str, int] | None = None  # array id → its tasks holding GPUs (now and placed)
    _array_caps: dict[str, int] = field(default_factory=dict)  # array id → its %N, where seen
    # (id(before), id(after)) → (before, after, change_between(before, after)): a pool's derived
    # values were mostly made from the same earlier list, so one comparison serves them all (the
    # lists are held here, so their ids are not reused within the cycle).
    _changes: dict[tuple[int, int], tuple[object, object, RunningChange | None]] = field(default_factory=dict)
    # id(job) → (job, what its outcome key and rank need of it): lent by the simulator across
    # cycles (snapshot.memo), where a pending job is the same object from cycle to cycle.
    _facts: dict[int, _Facts] = field(default_factory=dict)
    _static: Callable[[Job], float] | None = None

    @classmethod
    def start(cls, snapshot: ClusterSnapshot, config: PolicyConfig, now: float) -> CycleState:
        state = cls(
            snapshot=snapshot,
            config=config,
            now=now,
            capacity=snapshot.capacity,
            ledger=QuotaLedger(snapshot.queues, snapshot.queue_usage),
        )
        memo = snapshot.memo
        if memo is not None:
            kept = memo.get("job_facts")
            if not (
                isinstance(kept, _KeptFacts)
                and kept.config == config
                and kept.classes == snapshot.priority_classes
                and len(kept.facts) < 4 * snapshot.pending_count + 10_000  # ended jobs' go now and then
            ):
                kept = _KeptFacts(config, snapshot.priority_classes, {})
                memo["job_facts"] = kept
            state._facts = kept.facts
            never = memo.get("never_fits")
            if not (
                isinstance(never, _KeptNever)
                and never.pool_shapes == snapshot.pool_shapes
                and never.queues == snapshot.queues
            ):
                never = _KeptNever(snapshot.pool_shapes, snapshot.queues, {})
                memo["never_fits"] = never
            state._never = never.reasons
        return state

    def facts(self, job: Job) -> _Facts:
        """What the job's outcome key and rank need of it, worked out once per job object."""
        known = self._facts.get(id(job))
        if known is not None and known[0] is job:
            return known
        spec = job.spec
        if self._static is None:
            values = {name: pc.value for name, pc in self.snapshot.priority_classes.items()}
            self._static = corral_static(self.config, values)
        known = (
            job,
            spec.queue,
            (spec.priority, spec.data_region, spec.gpu_type, spec.nodes, spec.gpus_per_node),
            spec.time_limit_s,
            las_level(job.attained_gpu_s, self.config.las_thresholds_gpu_s),
            job.submitted_at,
            self._static(job),
        )
        self._facts[id(job)] = known
        return known

    def epoch(self) -> int:
        """Changes whenever a decision could change the outcome for a later job: a shrinking of
        `capacity`, a preemptor, a reservation or a claim (each bumps `changes`)."""
        return self.changes

    def count_preemptor(self) -> None:
        self.preemptors += 1
        self.changes += 1

    def count_claim(self) -> None:
        self.claims += 1
        self.changes += 1

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

    def running_in(self, pool: PoolKey) -> Sequence[RunningJob]:
        return self._running().get(pool, ())

    def running_by_pool(self) -> Mapping[PoolKey, Sequence[RunningJob]]:
        return self._running()

    def victims_for(self, job: Job, pool: PoolKey) -> tuple[Victims | None, int]:
        """preempt.search_victims for the job in the pool, as this cycle stands. A search that
        found nothing, neither cut short nor needing no victim, is remembered by pool, queue, class
        and service level, with the gang's nodes and GPUs per node (and whether a borrower's
        candidate was left out): a gang at least as wide finds nothing either (fewer rules apply to
        it, as it stays within its quota less, and it needs more), until a preemption or a
        placement that borrows. Until then GPUs and quota only go (holds, claims, placements within
        quota) and no queue borrows more, so no rule applies to more candidates."""
        spec = job.spec
        n, g = spec.nodes, spec.gpus_per_node
        level = las_level(job.attained_gpu_s, self.config.las_thresholds_gpu_s)
        stamp = (self.preemptors, self.borrowing_placements)
        if stamp != self._failed_at:
            self._failed_at = stamp
            self._failed.clear()
        narrower = self._failed.setdefault((pool, spec.queue, spec.priority, level), [])
        notes = -1
        for fn, fg, left_out in narrower:
            if n >= fn and g >= fg:
                notes = LEFT_OUT if left_out else 0
                if not left_out:
                    break
        if notes >= 0:
            return None, notes
        # A search that found victims is asked again for the same job when the idle check found
        # them and the walk then reaches the job (a third of a replay's successful searches, and
        # each costs as much as twenty failed ones). Its answer stands while nothing it read has
        # changed: `changes` moves with the GPUs free now, the quota, preemptions, reservations and
        # claims; the GPUs free once the leavers are gone are an index of their own, which a hold
        # replaces (without moving `changes` when it holds only leaving GPUs).
        capacity = self.victim_search_capacity(pool)
        found = self._found.get((job.id, pool))
        if found is not None and found[0] == self.changes and found[1] is capacity:
            return found[2], found[3]
        victims, notes = search_victims(
            self.snapshot,
            capacity,
            self.ledger,
            job,
            pool,
            self.candidates_in(pool),
            self.victims_taken,
            self.now,
            self.config,
            self.taken_gpus.get(pool.gpu_type, {}),
            self.preempted_refunds.get(pool.gpu_type),
        )
        if victims is None:
            if not notes & (CUT | NO_VICTIM_NEEDED):
                narrower.append((n, g, bool(notes & LEFT_OUT)))
        else:
            self._found[(job.id, pool)] = (self.changes, capacity, victims, notes)
        return victims, notes

    def no_victims_known(self, job: Job, pool: PoolKey) -> bool:
        """Whether _try_preempt passes the job over without a search (its memo of failed shapes)
        for the rest of this cycle, or until a preemption (which forgets them)."""
        failed = self._no_victims.get((pool, job.spec.queue, job.spec.priority))
        if not failed:
            return False
        n, g = job.spec.nodes, job.spec.gpus_per_node
        return any(n >= fn and g >= fg for fn, fg in failed)

    def _running(self) -> Mapping[PoolKey, Sequence[RunningJob]]:
        if self._running_by_pool is None:
            kept = self.snapshot.running_by_pool  # the owner's (model/running_pools.py)
            if kept is None:
                kept = self._derived("running_by_pool", self._group_running)
            self._running_by_pool = kept
        return self._running_by_pool

    def _group_running(self) -> dict[PoolKey, list[RunningJob]]:
        by_pool: dict[PoolKey, list[RunningJob]] = {}
        for r in self.snapshot.running.values():
            by_pool.setdefault(r.pool, []).append(r)
        memo = self.snapshot.memo
        before = memo.get("running_by_pool") if memo is not None else None
        if isinstance(before, _Memo) and isinstance(before.value, dict):
            # A pool whose running jobs are the very same objects keeps its list object, so that
            # what is derived from it alone (_per_pool) is reused: one job ending changes one pool.
            for pool, jobs in by_pool.items():
                old = before.value.get(pool)
                if old is not None and len(old) == len(jobs) and all(map(operator.is_, old, jobs)):
                    by_pool[pool] = old
        return by_pool

    def _per_pool(
        self,
        key: str,
        pool: PoolKey,
        compute: Callable[[Sequence[RunningJob]], _T],
        update: Callable[[_T, RunningChange], _T | None] | None = None,
    ) -> _T:
        """compute(the pool's running jobs), reused from an earlier cycle while they are the same
        objects (snapshot.memo): a change in another pool does not make it stale. `update` brings
        an earlier value up to date when only a few of them changed (pool_memo.py), or says it cannot
        (None)."""
        jobs = self.running_in(pool)
        memo = self.snapshot.memo
        if memo is None or self.snapshot.running_version < 0:
            return compute(jobs)
        hit = memo.get((key, pool))
        if isinstance(hit, PoolMemo):
            if hit.jobs is jobs:
                return cast(_T, hit.value)
            change = self._change(pool, hit.jobs, jobs) if update is not None else None
            updated = None
            if update is not None and change is not None:
                updated = update(cast(_T, hit.value), change)
            if updated is not None:
                memo[(key, pool)] = PoolMemo(jobs, updated)
                return updated
        value = compute(jobs)
        memo[(key, pool)] = PoolMemo(jobs, value)
        return value

    def _change(
        self, pool: PoolKey, before: Sequence[RunningJob], after: Sequence[RunningJob]
    ) -> RunningChange | None:
        """How the pool's running jobs changed from `before` (what a kept value was made from) to
        `after` (the current ones): as the owner says, where it says it from `before`."""
        lent = self.snapshot.running_changes
        told = lent.get(pool) if lent is not None else None
        if told is not None and told[0] is before and after is self.running_in(pool):
            return told[1]
        key = (id(before), id(after))
        known = self._changes.get(key)
        if known is None:
            known = self._changes[key] = (before, after, change_between(before, after))
        return known[2]

    def _derived(self, key: object, compute: Callable[[], _T]) -> _T:
        """compute(), a function of the running jobs alone (never changed by the caller), reused
        from an earlier cycle while they are unchanged (snapshot.memo, lent by the simulator)."""
        snapshot = self.snapshot
        memo = snapshot.memo
        if memo is None or snapshot.running_version < 0:
            return compute()
        hit = memo.get(key)
        if isinstance(hit, _Memo) and hit.version == snapshot.running_version:
            return cast(_T, hit.value)
        value = compute()
        memo[key] = _Memo(snapshot.running_version, value)
        return value

    def drain_order(self, pool: PoolKey) -> list[RunningJob]:
        """The pool's running jobs in the order backfill expects them to free their GPUs."""
        ordered = self._drain_order.get(pool)
        if ordered is None:
            ordered = self._per_pool("drain_order", pool, backfill.drain_order, backfill.drain_order_after)
            self._drain_order[pool] = ordered
        return ordered

    def candidates_in(self, pool: PoolKey) -> VictimCandidates:
        found = self._candidates.get(pool)
        if found is None:
            scan = self._reusable_scan(pool)
            # What is known of the candidates holds until then (None: not kept, so only now).
            self.candidates_valid_until = min(
                self.candidates_valid_until, scan.valid_until if scan is not None else self.now
            )
            found = VictimCandidates(self.snapshot, self.running_in(pool), self.now, self.config, scan)
            self._candidates[pool] = found
        return found

    def _reusable_scan(self, pool: PoolKey) -> CandidateScan | None:
        """The pool's candidate scan from an earlier cycle if nothing in it has changed since:
        the same running jobs, config and classes, and no protection or level changed in between.
        Otherwise a new scan, kept for the next cycles (None when there is no memo)."""
        snapshot = self.snapshot
        memo = snapshot.memo
        if memo is None or snapshot.running_version < 0:
            return None
        key = ("victims", pool)
        jobs = self.running_in(pool)
        hit = memo.get(key)
        scan: CandidateScan | None = None
        if (
            isinstance(hit, PoolMemo)
            and isinstance(hit.value, _ScanMemo)
            and hit.value.config == self.config
            and hit.value.classes == snapshot.priority_classes
            and hit.value.scan.at <= self.now < hit.value.scan.valid_until
        ):
            if hit.jobs is jobs:
                return hit.value.scan
            change = self._change(pool, hit.jobs, jobs)
            if change is not None:
                scan = rescan_candidates(hit.value.scan, jobs, change, snapshot, self.now, self.config)
        if scan is None:
            scan = scan_candidates(snapshot, jobs, self.now, self.config)
        memo[key] = PoolMemo(jobs, _ScanMemo(self.config, snapshot.priority_classes, scan))
        return scan

    def top_level(self, pool: PoolKey) -> int:
        """The highest service level among the pool's running jobs that service preemption may take."""
        return self.candidates_in(pool).top_level()

    def leaving_in(self, pool: PoolKey) -> list[RunningJob]:
        """Jobs of the pool in their preemption grace period: their GPUs free up soon."""
        return self._leaving().get(pool, [])

    def _leaving(self) -> dict[PoolKey, list[RunningJob]]:
        if self._leaving_by_pool is None:
            self._leaving_by_pool = {
                pool: self._per_pool("leaving", pool, _leaving_of) for pool in self._running()
            }
        return self._leaving_by_pool

    def settling_in(self, pool: PoolKey) -> list[NodeAllocation]:
        """GPUs of the pool that Ray is still releasing (snapshot.settling): free soon."""
        if self._settling_by_pool is None:
            by_pool: dict[PoolKey, list[NodeAllocation]] = {}
            settling = self.snapshot.settling
            for na in settling.nodes if settling is not None else ():
                node_pool = self.snapshot.capacity.pool_of(na.node)
                if node_pool is not None:
                    by_pool.setdefault(node_pool, []).append(na)
            self._settling_by_pool = by_pool
        return self._settling_by_pool.get(pool, [])

    def admitted_after_leavers(self, spec: JobSpec, gpu_type: str) -> bool:
        """Would the job's queue take it once every leaving job (this cycle's victims too, their
        preemptors started) has given its GPUs back?"""
        key = (spec.queue, gpu_type, spec.gpus, self.ledger.stamp(spec.queue, gpu_type))
        ok = self._admitted_after_leavers.get(key)
        if ok is None:
            refunds = self._leaving_refunds.get(gpu_type)
            if refunds is None:  # built once per type and preemption (the ledger knows it by identity)
                refunds = dict(self.preempted_refunds.get(gpu_type, {}))
                for pool, leaving in self._leaving().items():
                    for r in leaving if pool.gpu_type == gpu_type else ():
                        refunds[r.queue] = refunds.get(r.queue, 0) + r.gpus
                self._leaving_refunds[gpu_type] = refunds
            ok = self.ledger.admits_after(spec.queue, gpu_type, spec.gpus, refunds)
            self._admitted_after_leavers[key] = ok
        return ok

    def after_leavers(self, pool: PoolKey) -> CapacityIndex:
        """Free GPUs once the pool's leaving jobs are gone and Ray has released what it is still
        releasing, less what waiting jobs hold.

        Built once per pool and cycle, then kept in step with every change of `capacity`.
        """
        scratch = self._after_leavers.get(pool)
        if scratch is None:
            gone = [r.allocation for r in self.leaving_in(pool)]
            gone += [Allocation(nodes=(na,)) for na in self.settling_in(pool)]
            scratch = self._after_leavers[pool] = self.capacity.release_each(gone)
        return scratch

    def victim_search_capacity(self, pool: PoolKey) -> CapacityIndex:
        """The free GPUs a victim search in the pool starts from: those free once the jobs already
        leaving are gone (preempted earlier, or in this cycle beyond what their preemptors need),
        less what waiting jobs hold. Counting only the GPUs free now, a job that needed both a
        leaver's spare node and one more victim waited for the leaver to go before preempting,
        two grace periods in a row (tests/sim/test_reclaim.py)."""
        if self.leaving_in(pool) or self.settling_in(pool) or pool in self.victims_in:
            return self.after_leavers(pool)
        return self.capacity

    def preempted(
        self, job: Job, pool: PoolKey, victims: Sequence[RunningJob], allocation: Allocation
    ) -> None:
        """`job` preempted `victims` to start on `allocation` once they are gone: their GPUs count
        as leaving for the jobs after it in this cycle (its own part held for it) and the quota
        as given back, with its own GPUs charged."""
        scratch = self.after_leavers(pool).release_each([v.allocation for v in victims])
        self._after_leavers[pool] = scratch
        self.victims_in[pool] = self.victims_in.get(pool, 0) + len(victims)
        refunds = self.preempted_refunds.setdefault(pool.gpu_type, {})
        for v in victims:
            refunds[v.queue] = refunds.get(v.queue, 0) + v.gpus
        refunds[job.spec.queue] = refunds.get(job.spec.queue, 0) - job.spec.gpus
        self.hold(pool, allocation)
        # More is free once jobs leave: what did not fit or found no victims may now.
        self._no_fit_after_leavers.pop(pool, None)
        for key in [k for k in self._no_victims if k[0].gpu_type == pool.gpu_type]:  # quota moved too
            del self._no_victims[key]
        self._leaving_refunds.pop(pool.gpu_type, None)
        self._admitted_after_leavers.clear()

    def hold(self, pool: PoolKey, allocation: Allocation) -> None:
        """Keep `allocation` for a job that waits for jobs to leave (already leaving, or preempted
        by it in this cycle), so that no job after it in this cycle takes its GPUs: the free ones
        now, the leaving ones once they are free."""
        free: list[NodeAllocation] = []
        for na in allocation.nodes:
            free_now = set(self.capacity.free_on(na.node))
            if mine := tuple(g for g in na.gpus if g in free_now):
                free.append(NodeAllocation(node=na.node, gpus=mine))
        scratch = self.after_leavers(pool).allocate(allocation)
        if free:
            # Its pool's after-leavers index is `scratch` (which takes the free GPUs too).
            self._take(Allocation(nodes=tuple(free)), after_leavers=False)
            self.version += 1
            self.changes += 1
        self._after_leavers[pool] = scratch

    def _take(self, allocation: Allocation, after_leavers: bool = True) -> None:
        self.capacity = self.capacity.allocate(allocation)
        if self.unreserved is not None:
            try:
                self.unreserved = self.unreserved.allocate(allocation)
            except CapacityError:
                # It used reserved nodes (it ends before the reservation): hide them all again.
                self.unreserved = self.capacity.without_nodes(self._reserved_nodes())
        # Free in `capacity` means free in the pool's after-leavers index too (leaving jobs only
        # add free GPUs); only that pool's index is ever asked about that pool.
        if not after_leavers:
            return
        pool = self.capacity.pool_of(allocation.nodes[0].node)
        scratch = self._after_leavers.get(pool) if pool is not None else None
        if pool is not None and scratch is not None:
            self._after_leavers[pool] = scratch.allocate(allocation)

    def array_capped(self, job: Job) -> bool:
        """Whether the job is a task of an array that already holds GPUs for as many tasks as its
        `%N` allows (running, starting, leaving, or placed in this cycle); if so it waits, saying so.
        Checked before anything else: a capped task neither takes GPUs nor preempts for them."""
        cap = job.array_max_running
        if cap is None or job.array_id is None:
            return False
        self._array_caps[job.array_id] = cap
        running = self._arrays().get(job.array_id, 0)
        if running < cap:
            return False
        self.wait(job, _array_limit(job.array_id, running, cap))
        return True

    def array_limits(self) -> dict[str, PendingReason]:
        """The reason of every array at its cap, for its tasks that no step examined (Plan)."""
        counts = self._arrays()
        return {
            array_id: _array_limit(array_id, counts.get(array_id, 0), cap)
            for array_id, cap in self._array_caps.items()
            if counts.get(array_id, 0) >= cap
        }

    def _arrays(self) -> dict[str, int]:
        if self._array_running is None:
            counts: dict[str, int] = {}  # place() counts this cycle's placements in
            if self._running_by_pool is None:
                # Not grouped by pool in this cycle (las never needs it): one pass over them all.
                everywhere = self._derived("arrays", lambda: _count_arrays(self.snapshot.running.values()))
                counts.update(everywhere[0])
                self._array_caps.update(everywhere[1])
            for pool in self._running_by_pool or ():
                in_pool, caps = self._per_pool("arrays", pool, _count_arrays, _arrays_after)
                for array_id, n in in_pool.items():
                    counts[array_id] = counts.get(array_id, 0) + n
                self._array_caps.update(caps)
            self._array_running = counts
        return self._array_running

    def place(self, job: Job, pool: PoolKey, allocation: Allocation, borrowed: int, backfilled: bool) -> None:
        if job.array_id is not None:
            arrays = self._arrays()
            arrays[job.array_id] = arrays.get(job.array_id, 0) + 1
        if borrowed:
            # Carried with the running job: placed on borrowed quota, it is always reclaimable.
            allocation = allocation.model_copy(update={"borrowed_gpus": borrowed})
            self.borrowing_placements += 1
        self._take(allocation)
        self.ledger.charge(job.spec.queue, pool.gpu_type, allocation.gpus)
        self.version += 1
        self.changes += 1
        self.placed += 1
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
        self.changes += 1
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


# (the job, its queue, (priority, region, GPU type, nodes, GPUs per node), time limit, service
# level, submission time, the static part of its rank: order.corral_static)
_Facts = tuple[Job, str, tuple[str, str, str, int, int], float | None, int, float, float]


@dataclass(frozen=True, slots=True)
class _KeptFacts:
    config: PolicyConfig
    # snapshot.priority_classes (the live controller builds equal ones each cycle)
    classes: Mapping[str, PriorityClass]
    facts: dict[int, _Facts]


@dataclass(frozen=True, slots=True)
class _KeptNever:
    """CycleState.never_fits' answers across cycles: they read only what the cluster could ever
    offer (snapshot.pool_shapes) and the queues' quotas, and are kept while both are equal."""

    pool_shapes: Mapping[PoolKey, PoolShape]
    queues: Mapping[str, Queue]
    reasons: dict[tuple[str, str, str, int, int], PendingReason | None]


@dataclass(frozen=True, slots=True)
class _Memo:
    """A value derived from the running jobs, with the snapshot.running_version it was made at."""

    version: int
    value: Any


def _count_arrays(running: Iterable[RunningJob]) -> tuple[dict[str, int], dict[str, int]]:
    """Array id → its tasks holding GPUs, and → its %N cap (the same for all its tasks)."""
    counts: dict[str, int] = {}
    caps: dict[str, int] = {}
    for r in running:
        array_id, cap = r.job.array_id, r.job.array_max_running
        if array_id is not None:
            counts[array_id] = counts.get(array_id, 0) + 1
            if cap is not None:
                caps[array_id] = cap
    return counts, caps


def _arrays_after(
    counted: tuple[dict[str, int], dict[str, int]], change: RunningChange
) -> tuple[dict[str, int], dict[str, int]] | None:
    """_count_arrays unchanged while no task of an array came or went (None: count afresh)."""
    if any(r.job.array_id is not None for r in (*change.added, *change.gone)):
        return None
    return counted


def _leaving_of(running: Sequence[RunningJob]) -> list[RunningJob]:
    return [r for r in running if r.preempting]


@dataclass(frozen=True, slots=True)
class _ScanMemo:
    config: PolicyConfig
    # snapshot.priority_classes (the live controller builds equal ones each cycle)
    classes: Mapping[str, PriorityClass]
    scan: CandidateScan


def _array_limit(array_id: str, running: int, cap: int) -> PendingReason:
    detail = f"array {array_id} already runs {running} of its tasks, its limit (%{cap})"
    return PendingReason(PendingCode.ARRAY_TASK_LIMIT, detail)


def decide_corral(snapshot: ClusterSnapshot, config: PolicyConfig, now: float) -> Plan:
    """The default policy (see the module docstring for its phases)."""
    state = CycleState.start(snapshot, config, now)
    fair = FairShare(snapshot, config)
    priority_values = {name: pc.value for name, pc in snapshot.priority_classes.items()}
    # 1. Order.
    # Kept facts pay off only across cycles; within one, each job is ranked and keyed once.
    static = (lambda j: state.facts(j)[6]) if snapshot.memo is not None else None
    key = pending_key(config, priority_values)
    examined = 0
    fallback = PendingReason(PendingCode.PRIORITY, "behind higher-ordered jobs")
    outcomes: dict[tuple[object, ...], Outcome] = {}  # outcome key → why such a job waited, and when
    shapes = snapshot.pending_shapes
    if shapes is not None and shapes.thresholds != config.las_thresholds_gpu_s:
        shapes = None
    settled: _Settled | None = None
    merger: QueueMerger
    walk: GroupMerger | None = None  # the group walk, where it asks whether any job left may act
    if shapes is not None and _may_walk_groups(shapes, config, priority_values):
        if shapes.effects_only and _idle_at_start(state, shapes):
            return Plan(decisions=(), pending={}, examined=0, fallback=fallback, array_limits={})
        merger = GroupMerger(
            snapshot, config, now, key, fair, static, shapes, _KnownOutcomes(state, outcomes)
        )
        walk = merger if shapes.effects_only else None
    else:
        merger = QueueMerger(snapshot, config, now, key, fair, static=static)
        settled = _Settled(state, shapes) if shapes is not None else None
    acted = 0  # placements and preemptions when the walk last asked whether any job left may act
    for job in merger:
        if passed := merger.passed_over():
            examined, stop = _count_passed(state, examined, passed)
            if stop is not None:
                fallback = stop
                break
        if walk is not None and state.placed + state.preemptors != acted:
            acted = state.placed + state.preemptors
            if not _may_act(state, walk.remaining()):
                break  # the jobs left only wait (or reserve, which this owner does not read)
        if state.array_capped(job):
            continue  # a dictionary look-up: not counted against the scan depth
        if examined >= config.scan_depth:
            break
        examined += 1
        # 3. Nothing is free: only a preemption could start a job. Stop once no more may be tried.
        nothing_free = state.capacity.free_gpus() == 0
        if nothing_free and not _may_preempt(state):
            fallback = PendingReason(PendingCode.RESOURCES, "no free GPUs")
            break
        # A job just like one that had to wait, with nothing changed since, waits for the same
        # reason (the key holds all that steps 2a-2d and the test below read of a job).
        outcome_key = _outcome_key(state, job)
        epoch = state.epoch()
        known = outcomes.get(outcome_key)
        if known is not None and known.epoch == epoch and known.reason is not None:
            state.wait(job, known.reason)
            if settled is not None and settled.check(outcomes, epoch):
                break  # nothing left can change anything: the rest wait, unexamined
            continue
        # Pass quickly over the jobs that could not preempt anyone.
        if (
            nothing_free
            and not state.never_fits(job.spec)
            and not any(_could_preempt(state, job, pool) for pool in state.pools_for(job.spec))
        ):
            reason = state.resources_reason(job.spec)
            state.wait(job, reason)
            _record(outcomes, outcome_key, epoch, reason)
            continue
        # 2. Consider this job.
        placed_pool = _consider(state, job)
        if placed_pool is not None:
            fair.add(job.spec.queue, placed_pool.gpu_type, job.spec.gpus)
        elif state.epoch() == epoch and job.id in state.pending:
            _record(outcomes, outcome_key, epoch, state.pending[job.id])
    else:
        if passed := merger.passed_over():  # the tail, walked past: only the count changes
            examined, _ = _count_passed(state, examined, passed)
    return Plan(
        decisions=tuple(state.decisions),
        pending=state.pending,
        examined=examined,
        fallback=fallback,
        # Reasons for capped array tasks, which an owner of `effects_only` shapes does not read.
        array_limits=state.array_limits() if walk is None else {},
    )


_MAY_ACT, _IDLE_NOW, _IDLE = 0, 1, 2  # what _activity finds


def _may_act(state: CycleState, jobs: Sequence[Job]) -> bool:
    return _activity(state, jobs) == _MAY_ACT


def _activity(state: CycleState, jobs: Sequence[Job]) -> int:
    """Whether one of `jobs` (a job of each shape left to walk) might yet be placed, preempt or be
    rejected in this cycle, from its state now on. A no is certain, for every job of those shapes
    in whatever order they come: until the next placement or preemption, the cycle only holds GPUs
    for jobs waiting on leavers, reserves and claims quota, and each of those only takes free GPUs
    or quota away. So a job that is neither admitted where it fits now, nor fits once leavers are
    gone (then a later search could need victims where this one needed none), nor finds victims
    now (without its candidates cut at max_victims: then the search reads their order), never
    will; and only a shape that never fits is rejected (tests/policy/test_idle_stop.py).

    _MAY_ACT if one might; else _IDLE, or _IDLE_NOW where a search read the candidates' order,
    which moves with the clock: then it is not known to hold at a later time with all else the
    same (_IdleShapes)."""
    preempting = state.config.preemption and _may_preempt(state)
    for job in jobs:
        spec = job.spec
        if state.never_fits(spec) is not None:
            return _MAY_ACT
        for pool in state.pools_for(spec):
            admitted = state.ledger.admit(spec.queue, pool.gpu_type, spec.gpus).ok
            if admitted and _fits(state.capacity, pool, spec):
                return _MAY_ACT
            if (
                preempting
                and _fits(state.victim_search_capacity(pool), pool, spec)
                and _admitted_without_victims(state, spec, pool.gpu_type, admitted)
            ):
                return _MAY_ACT
    if not preempting:
        return _IDLE
    found = _IDLE
    for job in sorted(jobs, key=_width):  # the narrow first: their failures answer for the wide
        for pool in state.pools_for(job.spec):
            if not _could_preempt(state, job, pool) or state.no_victims_known(job, pool):
                continue
            victims, notes = state.victims_for(job, pool)
            if victims is not None or notes & (CUT | NO_VICTIM_NEEDED):
                return _MAY_ACT
            if notes & LEFT_OUT:
                found = _IDLE_NOW
    return found


def _width(job: Job) -> tuple[int, int]:
    return job.spec.nodes, job.spec.gpus_per_node


def _fits(capacity: CapacityIndex, pool: PoolKey, spec: JobSpec) -> bool:
    """Whether find_allocation finds the gang a place in the pool (it does whenever enough of its
    nodes have enough free GPUs)."""
    free = capacity.pool(pool)
    return free is not None and free.eligible(spec.gpus_per_node) >= spec.nodes


def _admitted_without_victims(state: CycleState, spec: JobSpec, gpu_type: str, admitted: bool) -> bool:
    """Whether the job's queue takes it with no victim of its own gone: as a victim search asks it
    (preempt._Admission), with this cycle's earlier preemptions done."""
    refunds = {q: g for q, g in state.preempted_refunds.get(gpu_type, {}).items() if g}
    if not refunds:
        return admitted
    return state.ledger.admits_after(spec.queue, gpu_type, spec.gpus, refunds)


def _idle_at_start(state: CycleState, shapes: PendingShapes) -> bool:
    """Whether no pending job may act in this cycle at all (_may_act at its start). Shapes found
    idle are kept for the next cycles while all that finding read stays the same (_IdleShapes):
    a cycle after an arrival then looks only at the shapes it has not seen."""
    snapshot = state.snapshot
    memo = snapshot.memo
    kept = memo.get("idle_shapes") if memo is not None else None
    if not (isinstance(kept, _IdleShapes) and kept.holds_for(state)):
        kept = None
    unseen: list[tuple[tuple[str, Shape], Job]] = []
    for queue, groups in shapes.groups.items():
        if queue not in snapshot.pending:
            continue
        for shape, group in groups.items():
            if group.jobs and (kept is None or (queue, shape) not in kept.shapes):
                unseen.append(((queue, shape), group.jobs[0]))
    if not unseen:
        return True
    found = _activity(state, [job for _, job in unseen])
    if found == _MAY_ACT:
        return False
    if memo is not None and found == _IDLE:
        if kept is None:
            kept = memo["idle_shapes"] = _IdleShapes(state)
        kept.until = min(kept.until, state.candidates_valid_until)
        kept.shapes.update(shape for shape, _ in unseen)
    return True


class _IdleShapes:
    """Pending shapes (queue, shape) found unable to act at a cycle's start, and what that finding
    read: the free GPUs (the very index), each pool's running jobs (the very lists: an owner that
    lends them makes a new one whenever a job starts, changes or ends), the queues' usage, the
    quotas, classes and config. It holds for a later cycle that starts from the same, before the
    victim candidates change by the clock alone (`until`). A plain class: its fields change."""

    __slots__ = ("capacity", "classes", "config", "queues", "running", "shapes", "until", "usage")

    def __init__(self, state: CycleState) -> None:
        snapshot = state.snapshot
        self.capacity = snapshot.capacity
        self.config = state.config
        self.classes = snapshot.priority_classes
        self.queues = snapshot.queues
        self.running: dict[PoolKey, Sequence[RunningJob]] = dict(state.running_by_pool())
        self.usage = _usage_key(snapshot.queue_usage)
        self.until = math.inf
        self.shapes: set[tuple[str, Shape]] = set()

    def holds_for(self, state: CycleState) -> bool:
        snapshot = state.snapshot
        if not (
            snapshot.capacity is self.capacity
            and snapshot.settling is None
            and state.now < self.until
            and _usage_key(snapshot.queue_usage) == self.usage
            and (state.config is self.config or state.config == self.config)
            and (snapshot.priority_classes is self.classes or snapshot.priority_classes == self.classes)
            and (snapshot.queues is self.queues or snapshot.queues == self.queues)
        ):
            return False
        running = state.running_by_pool()
        return len(running) == len(self.running) and all(
            self.running.get(pool) is jobs for pool, jobs in running.items()
        )


def _usage_key(usage: Mapping[str, Mapping[str, int]]) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
    """Each queue's GPUs in use per type, as a value (an owner may change its mapping in place)."""
    return tuple((queue, tuple(per_type.items())) for queue, per_type in usage.items())


def _outcome_key(state: CycleState, job: Job) -> tuple[object, ...]:
    """Everything about a job that steps 2a-2d look at, except its identity."""
    if state.snapshot.memo is not None:  # the simulator: kept from cycle to cycle
        _, queue, shape, time_limit_s, level, submitted_at, _ = state.facts(job)
        return _key(state, queue, shape, time_limit_s, level, _may_reserve_unbounded(state, submitted_at))
    spec = job.spec
    level = las_level(job.attained_gpu_s, state.config.las_thresholds_gpu_s)
    shape = (spec.priority, spec.data_region, spec.gpu_type, spec.nodes, spec.gpus_per_node)
    old = _may_reserve_unbounded(state, job.submitted_at)
    return _key(state, spec.queue, shape, spec.time_limit_s, level, old)


def _may_reserve_unbounded(state: CycleState, submitted_at: float) -> bool:
    """Whether a job submitted then has waited long enough to take an unbounded reservation
    (group_walk.py asks it the same way)."""
    return state.now - submitted_at >= state.config.reserve_unbounded_after_s


def _key(
    state: CycleState,
    queue: str,
    shape: tuple[str, str, str, int, int],
    time_limit_s: float | None,
    level: int,
    old: bool,
) -> tuple[object, ...]:
    now = state.now
    reservations = state.reservations
    return (
        queue,
        *shape,
        # The time limit matters only through which reservations the job would end before.
        tuple(backfill.limit_ends_before(time_limit_s, now, r.start) for r in reservations.values())
        if reservations
        else (),
        level,
        old,  # may take an unbounded reservation
    )


def _may_walk_groups(shapes: PendingShapes, config: PolicyConfig, priority_values: dict[str, int]) -> bool:
    """Whether the group walk (group_walk.py) walks these pending jobs as QueueMerger would: the
    owner keeps each group in this cycle's queue order, no two jobs of a group are tied but for
    their tie-break, and no capped array task waits (each of those must be looked at)."""
    return (
        shapes.order_signature == order_signature(config, priority_values)
        and shapes.order_ties == 0
        and shapes.capped_tasks == 0
    )


def _record(
    outcomes: dict[tuple[object, ...], Outcome], key: tuple[object, ...], epoch: _Epoch, reason: PendingReason
) -> None:
    """A job with this outcome key waited for `reason` at `epoch` (in the cell a walk may hold)."""
    cell = _cell(outcomes, key)
    cell.epoch = epoch
    cell.reason = reason


def _cell(outcomes: dict[tuple[object, ...], Outcome], key: tuple[object, ...]) -> Outcome:
    """The key's cell, made empty (no epoch yet) if no job with that key has waited."""
    cell = outcomes.get(key)
    if cell is None:
        cell = outcomes[key] = Outcome()
    return cell


class _KnownOutcomes:
    """group_walk.KnownOutcomes over this cycle's outcomes."""

    def __init__(self, state: CycleState, outcomes: dict[tuple[object, ...], Outcome]) -> None:
        self._state = state
        self._outcomes = outcomes

    def epoch(self) -> int:
        return self._state.epoch()

    def keys_at(self) -> int:
        return len(self._state.reservations)  # only ever added to in a cycle (see _key)

    def outcome(self, queue: str, shape: Shape, old: bool) -> Outcome:
        """The cell of the outcome key of a job of that queue and shape, old enough (or not) to take
        an unbounded reservation, at the cycle's current epoch (the key moves with the reservations,
        which change the epoch); made empty if no job with that key waited yet."""
        priority, region, gpu_type, nodes, gpn, time_limit_s, level = shape
        key = _key(self._state, queue, (priority, region, gpu_type, nodes, gpn), time_limit_s, level, old)
        return _cell(self._outcomes, key)


def _count_passed(state: CycleState, examined: int, passed: int) -> tuple[int, PendingReason | None]:
    """Count `passed` jobs walked past with a known outcome, as the plain walk counts each job it
    examines: against the scan depth, and with nothing free and no preemption left the first of
    them is where the walk stops. Returns the new count and why the walk stops there, if it does."""
    depth = state.config.scan_depth
    if examined >= depth:
        return examined, PendingReason(PendingCode.PRIORITY, "behind higher-ordered jobs")
    examined += 1
    if state.capacity.free_gpus() == 0 and not _may_preempt(state):
        return examined, PendingReason(PendingCode.RESOURCES, "no free GPUs")
    if examined + passed - 1 > depth:
        return depth, PendingReason(PendingCode.PRIORITY, "behind higher-ordered jobs")
    return examined + passed - 1, None


class _Settled:
    """Tells when every pending job's outcome key is known at the cycle's current epoch: then no
    job left can place, preempt, reserve or claim anything, in whatever order they come.

    Asked after each job that waited for a known reason; it looks only once the epoch has stayed
    the same for SETTLE_AFTER such jobs (working out the keys of every shape costs about as much as
    walking that many jobs), then after twice as many each time it finds a key still unknown (the
    jobs with that key may lie beyond the scan depth, never reached), and resumes where it stopped,
    since a key known at an epoch stays known for the rest of it.
    """

    SETTLE_AFTER = 32

    def __init__(self, state: CycleState, shapes: PendingShapes) -> None:
        self._state = state
        self._shapes = shapes
        self._epoch: _Epoch | None = None
        self._hits = 0
        self._next = self.SETTLE_AFTER
        self._needed: list[tuple[object, ...]] | None = None
        self._at = 0

    def check(self, outcomes: Mapping[tuple[object, ...], Outcome], epoch: _Epoch) -> bool:
        if epoch != self._epoch:
            self._epoch, self._hits, self._needed, self._at = epoch, 0, None, 0
            self._next = self.SETTLE_AFTER
        self._hits += 1
        if self._hits < self._next:
            return False
        needed = self._needed
        if needed is None:
            needed = self._needed = self._keys()
        while self._at < len(needed):
            known = outcomes.get(needed[self._at])
            if known is None or known.epoch != epoch:
                self._next = 2 * self._hits
                return False
            self._at += 1
        return True

    def _keys(self) -> list[tuple[object, ...]]:
        """The outcome keys of every pending job, by shape (both ends of each shape's submission
        range: whether a job may take an unbounded reservation is the key's only part that moves)."""
        state = self._state
        keys: list[tuple[object, ...]] = []
        for queue, groups in self._shapes.groups.items():
            for (priority, region, gpu_type, nodes, gpn, limit, level), group in groups.items():
                shape = (priority, region, gpu_type, nodes, gpn)
                old = _may_reserve_unbounded(state, group.oldest)
                keys.append(_key(state, queue, shape, limit, level, old))
                if group.newest != group.oldest:
                    old = _may_reserve_unbounded(state, group.newest)
                    keys.append(_key(state, queue, shape, limit, level, old))
        return keys


def _may_preempt(state: CycleState) -> bool:
    cfg = state.config
    return (
        cfg.preemption
        and state.preemptors < cfg.max_preemptors_per_cycle
        and state.preempt_attempts < 4 * cfg.max_preemptors_per_cycle
    )


def _consider(state: CycleState, job: Job) -> PoolKey | None:
    """Steps 2a-2d for one job; returns the pool it was placed in, if any."""
    spec = job.spec
    # 2a. Reject the impossible.
    impossible = state.never_fits(spec)
    if impossible is not None:
        state.decisions.append(Reject(job_id=job.id, reason=impossible.message))
        return None
    pools = state.pools_for(spec)
    quota_reason: PendingReason | None = None
    admitted: list[tuple[PoolKey, int]] = []
    owed: set[str] = set()  # GPU types of its queue's own quota, lent out to the cohort
    # 2b. Admit, then 2c. place.
    for pool in pools:
        admission = state.ledger.admit(spec.queue, pool.gpu_type, spec.gpus)
        if not admission.ok:
            quota_reason = PendingReason(PendingCode.QUOTA_EXCEEDED, admission.detail)
            if state.ledger.within_nominal(spec.queue, pool.gpu_type, spec.gpus):
                owed.add(pool.gpu_type)
            continue
        admitted.append((pool, admission.borrowed))
        placed = _try_place(state, job, pool, admission.borrowed)
        if placed:
            return pool
    if _wait(state, job, pools, admitted, quota_reason):
        # It starts once its victims are gone: what it is owed stays unlent meanwhile (see
        # quota.py: claims). A job that cannot reclaim claims nothing, so nothing idles for it.
        for gpu_type in sorted(owed):
            state.ledger.claim(spec.queue, gpu_type, spec.gpus)
            state.count_claim()
    return None


def _wait(
    state: CycleState,
    job: Job,
    pools: list[PoolKey],
    admitted: list[tuple[PoolKey, int]],
    quota_reason: PendingReason | None,
) -> bool:
    """Step 2d: the job waits — for leaving jobs, by preempting, or holding a reservation.
    True if it starts once jobs leave (preempted now or already leaving)."""
    spec, now = job.spec, state.now
    for pool in pools:
        detail = _waiting_for_leavers(state, job, pool)
        if detail is not None:
            state.wait(job, PendingReason(PendingCode.RESERVED, detail))
            return True
    if state.config.preemption and _may_preempt(state):
        for pool in pools:
            if _try_preempt(state, job, pool):
                return True
    if not admitted:
        state.wait(
            job, quota_reason or PendingReason(PendingCode.QUOTA_EXCEEDED, "no quota for this GPU type")
        )
        return False
    if state.config.backfill:
        for pool, _ in admitted:
            if pool in state.reservations:
                continue
            unbounded_ok = now - job.submitted_at >= state.config.reserve_unbounded_after_s
            memo = (pool, spec.nodes, spec.gpus_per_node, unbounded_ok)
            if memo in state.no_reservation:
                continue
            reservation = backfill.plan_reservation(
                state.capacity, pool, spec, job.id, state.drain_order(pool), now, unbounded_ok, True
            )
            if reservation is None:
                state.no_reservation.add(memo)
            else:
                state.reserve(reservation)
                detail = explain.reservation(len(reservation.nodes), reservation.start, now)
                detail += f"; {state.resources_reason(spec).detail}"
                state.wait(job, PendingReason(PendingCode.RESERVED, detail))
                return False
    for pool, _ in admitted:
        held = state.reservations.get(pool)
        if held is not None and state.find(pool, spec, state.capacity) is not None:
            # It would fit but for the GPUs held for an earlier job (Slurm says 'Priority' here),
            # which its team may not own: never named.
            state.wait(job, PendingReason(PendingCode.PRIORITY, explain.reserved_for_other(held.start, now)))
            return False
    state.wait(job, state.resources_reason(spec))
    return False


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


def _waiting_for_leavers(state: CycleState, job: Job, pool: PoolKey) -> str | None:
    """What `job` waits for, if it fits and is admitted once the pool's preempted jobs (still in
    their grace period) are gone and Ray has released the GPUs it is still releasing; None if not.
    If so, it holds those GPUs for this cycle, so that a preemptor gets what it preempted for
    instead of preempting again elsewhere while Ray catches up."""
    leaving, settling = state.leaving_in(pool), state.settling_in(pool)
    victims = state.victims_in.get(pool, 0)
    if not leaving and not settling and not victims:
        return None
    # What is free once they leave only shrinks during a cycle, but at a preemption (which forgets
    # these): a shape that did not fit will not until then.
    n, g = job.spec.nodes, job.spec.gpus_per_node
    failed = state._no_fit_after_leavers.setdefault(pool, [])
    if any(n >= fn and g >= fg for fn, fg in failed):
        return None
    alloc = find_allocation(state.after_leavers(pool), pool, n, g)
    if alloc is None:
        failed.append((n, g))
        return None
    if not state.admitted_after_leavers(job.spec, pool.gpu_type):
        return None
    state.hold(pool, alloc)
    if leaving or victims:
        return f"waiting for {plural(len(leaving) + victims, 'preempted job')} to exit"
    return f"waiting for {plural(sum(len(na.gpus) for na in settling), 'GPU')} to be released by Ray"


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
    within = state.ledger.within_nominal(spec.queue, pool.gpu_type, spec.gpus)
    return within and state.ledger.borrowers(queue.cohort, pool.gpu_type) > 0


def _try_preempt(state: CycleState, job: Job, pool: PoolKey) -> bool:
    if not _could_preempt(state, job, pool):
        return False
    # Same pool, queue and class see the same victims; a wider gang than one that failed fails too
    # (until a preemption frees more: CycleState.preempted forgets these).
    memo_key = (pool, job.spec.queue, job.spec.priority)
    n, g = job.spec.nodes, job.spec.gpus_per_node
    failed = state._no_victims.get(memo_key)
    if failed and any(n >= fn and g >= fg for fn, fg in failed):
        return False
    state.preempt_attempts += 1
    taken_gpus = state.taken_gpus.setdefault(pool.gpu_type, {})
    victims, _ = state.victims_for(job, pool)
    if victims is None:
        state._no_victims.setdefault(memo_key, []).append((n, g))
        return False
    state.count_preemptor()
    for v, rule in zip(victims.jobs, victims.rules, strict=True):
        state.victims_taken.add(v.id)
        taken_gpus[v.queue] = taken_gpus.get(v.queue, 0) + v.gpus
        state.decisions.append(Preempt(job_id=v.id, for_job=job.id, reason=victims.reason, rule=rule))
    # The GPUs it counted on stay its own until its victims are gone.
    state.preempted(job, pool, victims.jobs, victims.allocation)
    # The preemptor's team sees why, not whom: the victims may belong to other teams.
    state.wait(job, PendingReason(PendingCode.RESERVED, explain.preempting(victims.rules)))
    return True
