"""Baseline policies for comparison, on the same snapshot, steps and Plan as corral.

- fifo: strict first-come-first-served with gang placement; the first job that does not fit
  blocks everyone behind it (no backfill, no preemption).
- sjf: oracle shortest-job-first (the simulator knows each job's runtime); non-preemptive,
  a job that does not fit is skipped.
- las: Tiresias-L (the published simulator's `dlas-gpu`): discretized 2D least-attained-service.
  Jobs, running and pending, are ranked by their level of attained GPU-seconds (thresholds
  `las_baseline_thresholds_gpu_s`, Tiresias' 3,250 and 7,200 by default), and within a level *running
  jobs ahead of pending ones*, then by arrival; the top of the ranking that fits each pool's GPUs
  (and the queues' quotas) should run, and running jobs that fall out of it are preempted, as
  many as the jobs that should start need. No starvation promotion, as in Tiresias' results.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping

from scheduler.model.cluster import PoolKey
from scheduler.model.job import Job, JobSpec, PendingCode, PendingReason
from scheduler.model.pending_shapes import PendingShapes, ShapeGroup
from scheduler.model.plan import Plan, Preempt, Reject
from scheduler.model.snapshot import ClusterSnapshot, RunningJob
from scheduler.policy import explain
from scheduler.policy.config import PolicyConfig
from scheduler.policy.cycle import CycleState, _try_place, _waiting_for_leavers
from scheduler.policy.order import QueueMerger, las_level, order_signature, pending_key
from scheduler.policy.preempt import attained
from scheduler.policy.quota import QuotaLedger

# What QuotaLedger.admit passes: las charges its ledger after almost every admission, and each charge
# expires what admit caches, so it asks admits_after directly.
_NO_REFUNDS: dict[str, int] = {}


def _admit_and_place(state: CycleState, job: Job, prefer: PoolKey | None = None) -> bool:
    """Place the job if some pool (`prefer` first) admits and fits it, else record why. False if it waits."""
    spec = job.spec
    if state.array_capped(job):
        return True  # as in Slurm, a task held back by its array's cap does not block the line
    impossible = state.never_fits(spec)
    if impossible is not None:
        state.decisions.append(Reject(job_id=job.id, reason=impossible.message))
        return True  # rejected jobs do not block the line
    quota: PendingReason | None = None
    pools = state.pools_for(spec)
    if prefer in pools:
        pools = [prefer, *(p for p in pools if p != prefer)]
    for pool in pools:
        admission = state.ledger.admit(spec.queue, pool.gpu_type, spec.gpus)
        if not admission.ok:
            quota = PendingReason(PendingCode.QUOTA_EXCEEDED, admission.detail)
            continue
        if _try_place(state, job, pool, admission.borrowed):
            return True
    state.wait(job, quota or explain.resources(state.capacity, spec))
    return False


def _hold_for_leavers(state: CycleState, job: Job, pool: PoolKey) -> None:
    """A las winner that does not fit yet holds, for this cycle, the GPUs it fits on once the
    jobs leaving its pool are gone, so that a winner ranked after it does not take them."""
    detail = _waiting_for_leavers(state, job, pool)
    if detail is not None:
        state.wait(job, PendingReason(PendingCode.RESERVED, detail))


def _smallest_pending(state: CycleState, shapes: PendingShapes | None) -> int | None:
    """GPUs of the smallest pending job, if a las cycle may stop once no budget holds it (and no
    running job left to rank): only where nobody reads why jobs wait (the simulator lends its
    pending shapes), no pending job is impossible (it would be rejected on the way) and no capped
    array task waits (it would be held back, with a reason). None: walk them all."""
    if shapes is None or shapes.capped_tasks or shapes.order is None:
        return None
    smallest: int | None = None
    for groups in shapes.groups.values():
        for (_, _, _, nodes, gpus_per_node, _, _), group in groups.items():
            if not group.jobs or state.never_fits(group.jobs[0].spec) is not None:
                return None
            gpus = nodes * gpus_per_node
            smallest = gpus if smallest is None else min(smallest, gpus)
    return smallest


def _pool_won(
    state: CycleState, spec: JobSpec, budget: Mapping[PoolKey, int], admissions: QuotaLedger
) -> PoolKey | None:
    """The first pool where a pending job of this spec wins GPUs in a las cycle: its budget holds
    the job, the pool could ever hold the gang, and the job's queue admits it; None if none."""
    for pool in state.pools_for(spec):
        shape = state.snapshot.pool_shapes.get(pool)
        if (
            budget.get(pool, 0) >= spec.gpus
            and shape is not None
            and shape.can_ever_hold(spec.nodes, spec.gpus_per_node)
            and admissions.admits_after(spec.queue, pool.gpu_type, spec.gpus, _NO_REFUNDS)
        ):
            return pool
    return None


def _las_groups(
    snapshot: ClusterSnapshot, config: PolicyConfig, values: Mapping[str, int]
) -> list[ShapeGroup] | None:
    """The pending jobs' shape groups, each in las order, if the owner keeps them sorted by las'
    own key (then the pending walk is their merge by that key); else None."""
    shapes = snapshot.pending_shapes
    if shapes is None or shapes.order_signature != order_signature(config, values):
        return None
    return [
        group
        for queue, by_shape in shapes.groups.items()
        if queue in snapshot.pending
        for group in by_shape.values()
        if group.jobs
    ]


def _walk_groups(
    state: CycleState,
    groups: list[ShapeGroup],
    first: tuple[float | str, ...],
    examined: int,
    budget: dict[PoolKey, int],
    admissions: QuotaLedger,
    winners: list[tuple[Job, PoolKey]],
) -> int:
    """The rest of a las cycle's pending walk once no running job is left to rank, from the job
    whose sort key is `first`; returns the walk's count of jobs examined.

    Only a winner changes anything (a budget and the ledger), and whether a job wins depends on
    its queue and gang alone until then, which its shape group shares. So instead of asking job
    by job, each round finds the group whose next job ranks first among those that would win,
    passes over every job ranked before it (counted against the scan depth) and takes it. Only
    where _smallest_pending allows a shortcut: no pending job is impossible or a capped array
    task, so the jobs passed over only wait (tests/policy/test_las_stop.py compares both walks).
    """
    depth = state.config.scan_depth
    at = [bisect_left(group.keys, first) for group in groups]
    while True:
        best = -1
        best_key: tuple[float | str, ...] | None = None
        best_pool: PoolKey | None = None
        won: dict[tuple[str, str, str, int, int], PoolKey | None] = {}  # one answer per queue and gang
        for k, group in enumerate(groups):
            head = at[k]
            if head >= len(group.jobs) or (best_key is not None and group.keys[head] >= best_key):
                continue  # nothing of it ranks before the best found so far
            spec = group.jobs[head].spec
            gang = (spec.queue, spec.data_region, spec.gpu_type, spec.nodes, spec.gpus_per_node)
            if gang in won:
                pool = won[gang]
            else:
                pool = won[gang] = _pool_won(state, spec, budget, admissions)
            if pool is not None:
                best, best_key, best_pool = k, group.keys[head], pool
        if best_key is None or best_pool is None:
            left = sum(len(group.jobs) - head for group, head in zip(groups, at, strict=True))
            return min(depth, examined + left)
        for k, group in enumerate(groups):
            to = bisect_left(group.keys, best_key, at[k])
            examined += to - at[k]
            at[k] = to
        if examined >= depth:
            return depth
        examined += 1
        job = groups[best].jobs[at[best]]
        at[best] += 1
        spec = job.spec
        winners.append((job, best_pool))
        admissions.charge(spec.queue, best_pool.gpu_type, spec.gpus)
        budget[best_pool] -= spec.gpus


def _suffix_minimum(values: list[int]) -> list[int]:
    out = list(values)
    for k in range(len(out) - 2, -1, -1):
        out[k] = min(out[k], out[k + 1])
    return out


def _ordered(snapshot: ClusterSnapshot, config: PolicyConfig, now: float) -> QueueMerger:
    values = {name: pc.value for name, pc in snapshot.priority_classes.items()}
    return QueueMerger(snapshot, config, now, pending_key(config, values), fair_share=None)


def decide_fifo(snapshot: ClusterSnapshot, config: PolicyConfig, now: float) -> Plan:
    state = CycleState.start(snapshot, config, now)
    examined = 0
    for job in _ordered(snapshot, config, now):
        if state.array_capped(job):
            continue
        if examined >= config.scan_depth:
            break
        examined += 1
        if not _admit_and_place(state, job):
            break  # strict FIFO: the head blocks the line
    return Plan(
        decisions=tuple(state.decisions),
        pending=state.pending,
        examined=examined,
        fallback=PendingReason(PendingCode.PRIORITY, "behind the head of the FIFO line"),
        array_limits=state.array_limits(),
    )


def decide_sjf(snapshot: ClusterSnapshot, config: PolicyConfig, now: float) -> Plan:
    state = CycleState.start(snapshot, config, now)
    examined = 0
    for job in _ordered(snapshot, config, now):
        if state.array_capped(job):
            continue
        if examined >= config.scan_depth or state.capacity.free_gpus() == 0:
            break
        examined += 1
        _admit_and_place(state, job)
    return Plan(
        decisions=tuple(state.decisions),
        pending=state.pending,
        examined=examined,
        array_limits=state.array_limits(),
    )


def decide_las(snapshot: ClusterSnapshot, config: PolicyConfig, now: float) -> Plan:
    """Tiresias 2D-LAS with a GPU budget per pool (region × GPU type)."""
    state = CycleState.start(snapshot, config, now)
    th = config.las_baseline_thresholds_gpu_s
    # Jobs in their grace period are leaving: not ranked, their GPUs and quota as good as free.
    # Counting them as taken until they were gone left their preemptor out of the ranking for the
    # grace period, and the GPUs it had freed went back to the jobs it had preempted, for ever
    # (tests/sim/test_las_livelock.py).
    budget: dict[PoolKey, int] = {key: 0 for key in snapshot.capacity.pools}
    for node in snapshot.nodes.values():
        if node.schedulable:
            budget[node.pool] = budget.get(node.pool, 0) + node.gpus
    leaving: dict[PoolKey, int] = {}
    for r in snapshot.running.values():
        if r.preempting:
            leaving[r.pool] = leaving.get(r.pool, 0) + r.gpus

    def rank(r: RunningJob) -> tuple[int, float, str]:
        return (las_level(attained(r, now), th), r.job.submitted_at, r.id)

    def level_of(job: Job | None) -> int:
        return las_level(job.attained_gpu_s, th) if job is not None else 0

    # Within a level, a running job ranks ahead of every pending one (Tiresias moves the pending
    # jobs of each queue behind the running ones after every pass): a job of the same level that
    # waits does not take a running job's GPUs. Ranking both by arrival instead preempted running
    # jobs for older pending ones of the same level, and cost 1.2× the average JCT on the peer input.

    ranked = sorted((rank(r), r) for r in snapshot.running.values() if not r.preempting)
    ranked_running = [r for _, r in ranked]
    running_levels = [key[0] for key, _ in ranked]  # each job's level, worked out once in its rank
    smallest = _smallest_pending(state, snapshot.pending_shapes)
    values = {name: pc.value for name, pc in snapshot.priority_classes.items()}
    sort_key = pending_key(config, values)
    groups = _las_groups(snapshot, config, values) if smallest is not None else None
    # GPUs of the smallest running job from each rank on: once no budget holds it, none is kept.
    least_from: list[float] = [*_suffix_minimum([r.gpus for r in ranked_running]), math.inf]
    most = max(budget.values(), default=0)  # the largest budget left, kept as budgets shrink
    pending_iter = iter(_ordered(snapshot, config, now))
    next_pending = next(pending_iter, None)
    pending_level = level_of(next_pending)
    keep: set[str] = set()
    winners: list[tuple[Job, PoolKey]] = []
    # The set that should run must itself respect the quotas: admit jobs (running or not) in rank
    # order; a running job that no longer fits its queue's share loses its GPUs like any other
    # (this is how LAS reclaims lent quota).
    admissions = QuotaLedger(snapshot.queues, {})
    examined = 0
    i = 0
    # Merge the two rankings: whatever fits in its pool's GPU budget, in rank order, should run.
    while i < len(ranked_running) or next_pending is not None:
        if smallest is not None and most < smallest and most < least_from[i]:
            # Nothing left can win GPUs or keep them: the rest only wait (see _smallest_pending).
            examined = min(config.scan_depth, snapshot.pending_count)
            break
        if next_pending is None:
            take_running = True
        elif i >= len(ranked_running):
            take_running = False
        else:
            take_running = running_levels[i] <= pending_level
        if take_running:
            r = ranked_running[i]
            i += 1
            if budget.get(r.pool, 0) >= r.gpus and admissions.admits_after(
                r.queue, r.gpu_type, r.gpus, _NO_REFUNDS
            ):
                keep.add(r.id)
                budget[r.pool] -= r.gpus
                most = max(budget.values())
                admissions.charge(r.queue, r.gpu_type, r.gpus)
            continue
        assert next_pending is not None
        if groups is not None and i >= len(ranked_running):
            # No running job left to rank: the rest of the walk, by groups (see _walk_groups).
            examined = _walk_groups(
                state, groups, sort_key(next_pending), examined, budget, admissions, winners
            )
            break
        if examined >= config.scan_depth:
            break
        examined += 1
        spec = next_pending.spec
        if state.array_capped(next_pending):
            pass
        elif state.never_fits(spec) is not None:
            _admit_and_place(state, next_pending)  # records the rejection
        else:
            won = _pool_won(state, spec, budget, admissions)
            if won is not None:
                winners.append((next_pending, won))
                admissions.charge(spec.queue, won.gpu_type, spec.gpus)
                budget[won] -= spec.gpus
                most = max(budget.values())
        next_pending = next(pending_iter, None)
        pending_level = level_of(next_pending)
    # Preempt, in each pool, only as many losers as the winners there cannot find free, now or
    # once the jobs already leaving are gone.
    need: dict[PoolKey, int] = {}
    for job, pool in winners:
        need[pool] = need.get(pool, 0) + job.spec.gpus
    if config.preemption:
        for r in reversed(ranked_running):
            pool = r.pool
            short = (
                need.get(pool, 0) - snapshot.capacity.pools[pool].free_gpus - leaving.get(pool, 0)
                if pool in snapshot.capacity.pools
                else 0
            )
            if short <= 0 or r.id in keep or not r.job.spec.preemptible:
                continue
            if now - r.started_at < config.las_min_runtime_s:
                continue  # like Tiresias' scheduling interval: a start is not undone at once
            state.decisions.append(
                Preempt(
                    job_id=r.id,
                    for_job=winners[0][0].id,
                    reason="las: more attained service",
                    rule="service",
                )
            )
            need[pool] = need.get(pool, 0) - r.gpus
    for job, pool in winners:
        if not _admit_and_place(state, job, prefer=pool):
            _hold_for_leavers(state, job, pool)
    return Plan(
        decisions=tuple(state.decisions),
        pending=state.pending,
        examined=examined,
        array_limits=state.array_limits(),
    )
