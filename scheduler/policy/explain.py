"""Pending reasons with numbers: the answer to 'why is my job pending?'.

A reason is shown to the job's team: it speaks in durations and counts with their plurals, and
never names another job or another queue (they may belong to other teams). Times are relative,
so the words are the same on the simulator's virtual clock and the live wall clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from scheduler.model.capacity import CapacityIndex
from scheduler.model.cluster import ANY
from scheduler.model.job import JobSpec, PendingCode, PendingReason
from scheduler.model.snapshot import ClusterSnapshot, RunningJob
from scheduler.policy.place import candidate_pools
from scheduler.policy.quota import QuotaLedger
from scheduler.policy.words import duration, plural


def shape(spec: JobSpec) -> str:
    """'1 GPU', '4 H100 in cn-north', '2×8 GPUs'."""
    where = f" in {spec.data_region}" if spec.data_region != ANY else ""
    gpu = spec.gpu_type if spec.gpu_type != ANY else ("GPU" if spec.gpus == 1 else "GPUs")
    if spec.nodes == 1:
        return f"{spec.gpus_per_node} {gpu}{where}"
    return f"{spec.nodes}×{spec.gpus_per_node} {gpu}{where}"


def reservation(nodes: int, start: float | None, now: float) -> str:
    """A job's own backfill reservation, e.g. 'holds 2 nodes, starting in about 59 min when
    running jobs reach their time limits'."""
    held = f"holds {plural(nodes, 'node')}"
    if start is None:
        return f"{held} until running jobs end (they have no time limits)"
    if start <= now:
        return f"{held}, starting when running jobs past their time limits have stopped"
    return f"{held}, starting in about {duration(start - now)} when running jobs reach their time limits"


def reserved_for_other(start: float | None, now: float) -> str:
    """A job that would fit but for another job's reservation (which its team may not own)."""
    if start is None:
        when = "until running jobs there end"
    elif start <= now:
        when = "starting now"
    else:
        when = f"starting in {duration(start - now)}"
    return f"fits, but the free nodes are reserved for an earlier job ({when})"


_PREEMPTING_WHY = {
    "priority": "of a lower priority",
    "reclaim": "on quota its queue lent out",
    "service": "that ran longer",
}


def preempting(rules: Iterable[str]) -> str:
    """The preemptor's reason, from each victim's Preempt.rule: counts and rules, never whom.

    e.g. 'preempting 2 jobs (on quota its queue lent out); starts once they have exited'.
    """
    rules = list(rules)
    kinds = [k for k in _PREEMPTING_WHY if any(k in r.split(",") for r in rules)]
    why = "; ".join(_PREEMPTING_WHY[k] for k in kinds)
    leave = "it has" if len(rules) == 1 else "they have"
    return f"preempting {plural(len(rules), 'job')} ({why}); starts once {leave} exited"


def never_fits(snapshot: ClusterSnapshot, spec: JobSpec) -> PendingReason | None:
    """A reason if no node of the cluster, in any state, could ever hold the job; else None."""
    pools = [
        k
        for k in snapshot.pool_shapes
        if (spec.data_region == ANY or k.region == spec.data_region)
        and (spec.gpu_type == ANY or k.gpu_type == spec.gpu_type)
    ]
    if not pools:
        if spec.gpu_type != ANY and not any(k.gpu_type == spec.gpu_type for k in snapshot.pool_shapes):
            return PendingReason(
                PendingCode.GPU_TYPE_UNAVAILABLE, f"the cluster has no {spec.gpu_type} nodes"
            )
        if spec.data_region != ANY and not any(k.region == spec.data_region for k in snapshot.pool_shapes):
            return PendingReason(
                PendingCode.REGION_CAPACITY, f"the cluster has no nodes in {spec.data_region}"
            )
        return PendingReason(
            PendingCode.GPU_TYPE_UNAVAILABLE, f"region {spec.data_region} has no {spec.gpu_type} nodes"
        )
    if any(snapshot.pool_shapes[k].can_ever_hold(spec.nodes, spec.gpus_per_node) for k in pools):
        return None
    most = max(
        snapshot.pool_shapes[k].nodes_by_min_gpus[
            min(spec.gpus_per_node, snapshot.pool_shapes[k].max_gpus_per_node)
        ]
        if spec.gpus_per_node <= snapshot.pool_shapes[k].max_gpus_per_node
        else 0
        for k in pools
    )
    widest = max(snapshot.pool_shapes[k].max_gpus_per_node for k in pools)
    if spec.gpus_per_node > widest:
        return PendingReason(
            PendingCode.TOPOLOGY, f"needs {spec.gpus_per_node} GPUs per node; the largest node has {widest}"
        )
    exist = "exists" if most == 1 else "exist"
    return PendingReason(
        PendingCode.REGION_CAPACITY,
        f"needs {shape(spec)}; only {plural(most, 'suitable node')} {exist} there",
    )


def resources(capacity: CapacityIndex, spec: JobSpec) -> PendingReason:
    """Resources (not enough free GPUs) or Topology (enough GPUs, but not on whole enough nodes)."""
    pools = candidate_pools(capacity, spec)
    free = sum(capacity.pools[k].free_gpus for k in pools)
    nodes_ok = max((capacity.pools[k].eligible(spec.gpus_per_node) for k in pools), default=0)
    g = spec.gpus_per_node
    if free >= spec.gpus:
        return PendingReason(
            PendingCode.TOPOLOGY,
            f"needs {shape(spec)}; {plural(free, 'GPU')} free but only {plural(nodes_ok, 'node')} "
            f"with {g} free",
        )
    return PendingReason(
        PendingCode.RESOURCES,
        f"needs {shape(spec)}; {plural(free, 'GPU')} free, {plural(nodes_ok, 'node')} with {g} free",
    )


def beyond_quota(snapshot: ClusterSnapshot, ledger: QuotaLedger, spec: JobSpec) -> PendingReason | None:
    """A reason if the job's queue could never be admitted it, even with every other queue idle."""
    if spec.queue not in snapshot.queues:
        return PendingReason(PendingCode.QUOTA_EXCEEDED, f"queue {spec.queue!r} does not exist")
    types = sorted(
        {
            k.gpu_type
            for k, shape_ in snapshot.pool_shapes.items()
            if (spec.data_region == ANY or k.region == spec.data_region)
            and (spec.gpu_type == ANY or k.gpu_type == spec.gpu_type)
            and shape_.can_ever_hold(spec.nodes, spec.gpus_per_node)
        }
    )
    ceilings = {t: ledger.ceiling(spec.queue, t) for t in types}
    if any(c >= spec.gpus for c in ceilings.values()):
        return None
    most = ", ".join(f"{c} {t}" for t, c in ceilings.items())
    return PendingReason(
        PendingCode.QUOTA_EXCEEDED,
        f"needs {plural(spec.gpus, 'GPU')}; queue {spec.queue} can never hold more than {most} "
        "(quota plus what its cohort can lend): ask for fewer GPUs or a bigger quota",
    )


# --- why a job was preempted ---------------------------------------------------------------------

_PREEMPTED_WORDS = {
    "priority": "preempted for a job of a higher priority class",
    "reclaim": "its queue ran on borrowed quota, which the lending queue took back",
    "service": "preempted for a job with less attained GPU time (it has run long; it resumes later)",
}


def preempted_words(rule: str) -> str:
    """What the victim's team is told for a Preempt's rule ("priority", "reclaim", "service", or
    several joined by ","): the reason without naming the other job or its queue."""
    return "; ".join(_PREEMPTED_WORDS[r] for r in rule.split(",") if r in _PREEMPTED_WORDS) or "preempted"


@dataclass(frozen=True, slots=True)
class WorkLost:
    """Work a preemption throws away: the running time since the job's last checkpoint, at the
    end of its grace period (when it is stopped)."""

    seconds: float  # wall-clock seconds of progress lost
    gpu_seconds: float  # the same, times the GPUs the job holds
    basis: str  # "checkpoint": its checkpoint interval is known; "start": counted from its start

    def words(self, interval_s: float | None) -> str:
        """e.g. 'loses about 9 min of work (1.2 GPU-hours) since its last checkpoint (one every 17 min)',
        or, with no checkpoint known, 'loses up to 40 s of work: its run since this attempt started
        and its grace period, ...'."""
        hours = f" ({self.gpu_seconds / 3600:.1f} GPU-hours)" if self.gpu_seconds >= 360 else ""
        if self.basis == "checkpoint" and interval_s is not None:
            return (
                f"loses about {duration(self.seconds)} of work{hours} since its last checkpoint "
                f"(one every {duration(interval_s)})"
            )
        return (
            f"loses up to {duration(self.seconds)} of work{hours}: its run since this attempt started "
            "and its grace period, as it reported no checkpoint (a job that saves one on SIGTERM "
            "loses none)"
        )


def work_lost(victim: RunningJob, now: float) -> WorkLost:
    """What preempting `victim` at `now` throws away once its grace period ends, and what the
    figure is based on: its checkpoint interval when known (the simulator's), else the time since
    this attempt started (no checkpoint reported)."""
    stop = now + victim.job.spec.grace_period_s
    lost = victim.work_at_risk_s(stop)
    basis = "checkpoint" if victim.checkpoint_interval_s is not None else "start"
    return WorkLost(lost, lost * victim.gpus, basis)


def why_preempted(rule: str, victim: RunningJob, now: float) -> str:
    """The victim's history line, the same in the live controller and the simulator, e.g.
    'preempted for a job of a higher priority class (rule: priority); loses about 9 min of work
    since its last checkpoint (one every 17 min)'. Never names the other job or its queue."""
    lost = work_lost(victim, now).words(victim.checkpoint_interval_s)
    return f"{preempted_words(rule)} (rule: {rule}); {lost}"


def preempted_by(for_job: str, reason: str) -> str:
    """The private detail (an admin, or the preemptor's team, reads it): whom it made room for."""
    return f"for job {for_job}: {reason}"
