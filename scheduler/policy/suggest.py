"""Counterfactual reasons: which change to a waiting job's spec would start it now.

A pending reason says why a job waits; a suggestion says what would start it in this very cycle,
e.g. "fits now with `--gpus 8`". Candidate changes, cheapest to make first:
  1. shape: the same GPUs as another gang shape (2×4 instead of 1×8), or fewer of them (fewer
     nodes, fewer GPUs per node), sized from what is free in the job's pools;
  2. GPU type: another type with free GPUs inside the job's data region;
  3. queue: another queue the caller says the job's team may use, with quota room;
  4. time limit: a limit short enough to backfill before a reservation in its pools.
Each candidate is verified: decide() runs on the same snapshot with only that job's spec changed,
and the change is suggested only if that cycle places the job. The data region is never changed,
so a suggestion never sends the job's data where it may not go; queues outside `queues` are never
tried. The work is bounded by `max_tries` cycles per job; callers bound how many jobs they ask for.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from scheduler.model.cluster import ANY, PoolKey
from scheduler.model.job import Job, JobSpec
from scheduler.model.plan import Place, Plan, Reject
from scheduler.model.snapshot import ClusterSnapshot
from scheduler.policy.config import PolicyConfig
from scheduler.policy.decide import decide
from scheduler.policy.order import PendingKey, pending_key
from scheduler.policy.place import candidate_pools
from scheduler.policy.quota import QuotaLedger

__all__ = ["KINDS", "Suggestion", "suggest", "with_spec"]

KINDS = ("shape", "gpu_type", "queue", "time_limit")
NODE_GPUS = 8  # `--gpus N` above this means whole 8-GPU nodes (scheduler.client.spec)
_MAX_PER_KIND = {"shape": 2, "gpu_type": 2, "queue": 3, "time_limit": 1}

Change = Mapping[str, int | float | str]
DecideFn = Callable[[ClusterSnapshot, PolicyConfig, float], Plan]


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One verified change: the spec fields it sets, the `corral submit` flags, and the words."""

    kind: str  # one of KINDS
    change: Change  # e.g. {"nodes": 1, "gpus_per_node": 8}, {"queue": "research"}
    flag: str  # e.g. "--gpus 8", "-N 2 --gpus-per-node 4", "--queue research", "--time 45m"
    text: str  # e.g. "fits now with `--gpus 8` (8 GPUs instead of 16)"


def suggest(
    snapshot: ClusterSnapshot,
    config: PolicyConfig,
    now: float,
    job: Job,
    *,
    plan: Plan | None = None,
    queues: Collection[str] | None = None,
    max_tries: int = 10,
    decide_fn: DecideFn = decide,
    stop: Callable[[], bool] | None = None,
) -> tuple[Suggestion, ...]:
    """Verified changes that would start `job` (pending in `snapshot`) in the cycle at `now`.

    `plan` is decide()'s plan for the unchanged snapshot (computed if not given); a job it places
    or rejects gets no suggestion. `queues`: the queues the job's team may use (None: every queue).
    `stop`, asked before each trial cycle, ends the search early (the caller's time budget).
    """
    if plan is None:
        plan = decide_fn(snapshot, config, now)
    if any(isinstance(d, Place | Reject) and d.job_id == job.id for d in plan.decisions):
        return ()
    key = pending_key(config, {name: pc.value for name, pc in snapshot.priority_classes.items()})
    found: list[Suggestion] = []
    per_kind: dict[str, int] = {}
    for tries, (kind, change, text) in enumerate(_candidates(snapshot, plan, now, job, queues)):
        if tries >= max_tries or (stop is not None and stop()):
            break
        if per_kind.get(kind, 0) >= _MAX_PER_KIND[kind]:
            continue
        changed = job.model_copy(update={"spec": job.spec.model_copy(update=dict(change))})
        trial = decide_fn(with_spec(snapshot, job, changed, key), config, now)
        if any(isinstance(d, Place) and d.job_id == job.id for d in trial.decisions):
            per_kind[kind] = per_kind.get(kind, 0) + 1
            found.append(Suggestion(kind, change, _flag(change), text))
    return tuple(found)


def with_spec(snapshot: ClusterSnapshot, job: Job, changed: Job, key: PendingKey) -> ClusterSnapshot:
    """The snapshot with `job` replaced by `changed` (perhaps in another queue), each queue's
    pending jobs still in the policy's order (`key`). Only the queues concerned are copied."""
    pending = dict(snapshot.pending)
    old = [j for j in pending.get(job.spec.queue, ()) if j.id != job.id]
    pending[job.spec.queue] = old
    target = old if changed.spec.queue == job.spec.queue else list(pending.get(changed.spec.queue, ()))
    bisect.insort(target, changed, key=key)
    pending[changed.spec.queue] = target
    return ClusterSnapshot(
        nodes=snapshot.nodes,
        capacity=snapshot.capacity,
        queues=snapshot.queues,
        priority_classes=snapshot.priority_classes,
        pending=pending,
        running=snapshot.running,
        queue_usage=snapshot.queue_usage,
        usage_history=snapshot.usage_history,
        gpus_by_type=snapshot.gpus_by_type,
        pool_shapes=snapshot.pool_shapes,
    )


# --- candidates ----------------------------------------------------------------------------------


def _candidates(
    snapshot: ClusterSnapshot, plan: Plan, now: float, job: Job, queues: Collection[str] | None
) -> list[tuple[str, Change, str]]:
    spec = job.spec
    pools = candidate_pools(snapshot.capacity, spec)
    out: list[tuple[str, Change, str]] = []
    out += _shapes(snapshot, spec, pools)
    out += _gpu_types(snapshot, spec)
    out += _queues(snapshot, spec, pools, queues)
    out += _time_limits(snapshot, plan, now, spec, pools)
    return out


def _eligible(snapshot: ClusterSnapshot, pools: list[PoolKey], gpus_per_node: int) -> int:
    """The most nodes with `gpus_per_node` free in any one of the pools."""
    free = snapshot.capacity.pools
    return max((free[k].eligible(gpus_per_node) for k in pools if k in free), default=0)


def _shapes(snapshot: ClusterSnapshot, spec: JobSpec, pools: list[PoolKey]) -> list[tuple[str, Change, str]]:
    """The same GPUs as another gang shape, then fewer GPUs: shapes what is free could hold."""
    n, g, total = spec.nodes, spec.gpus_per_node, spec.gpus
    widest = max(
        (snapshot.pool_shapes[k].max_gpus_per_node for k in pools if k in snapshot.pool_shapes), default=0
    )
    same: list[tuple[int, int]] = []
    for n2 in range(1, total + 1):
        if total % n2 or n2 == n or total // n2 > widest:
            continue
        if _eligible(snapshot, pools, total // n2) >= n2:
            same.append((n2, total // n2))
    smaller: list[tuple[int, int]] = []
    fewer_nodes = min(n - 1, _eligible(snapshot, pools, g))
    if fewer_nodes >= 1:
        smaller.append((fewer_nodes, g))
    narrower = next((g2 for g2 in range(g - 1, 0, -1) if _eligible(snapshot, pools, g2) >= n), 0)
    if narrower:
        smaller.append((n, narrower))
    if n > 1:
        one = next((g2 for g2 in range(min(g * n - 1, widest), 0, -1) if _eligible(snapshot, pools, g2)), 0)
        if one:
            smaller.append((1, one))
    half = total // 2
    if half >= 1:
        smaller.append((1, half) if half <= NODE_GPUS else (math.ceil(half / NODE_GPUS), NODE_GPUS))
    out: list[tuple[str, Change, str]] = []
    for n2, g2 in same[:2]:
        change = {"nodes": n2, "gpus_per_node": g2}
        words = f"{_shape(n2, g2)} instead of {_shape(n, g)}: the same {total} GPUs, if the job runs so"
        out.append(("shape", change, f"fits now with `{_flag(change)}` ({words})"))
    seen: set[tuple[int, int]] = set()
    for n2, g2 in sorted(smaller, key=lambda s: -s[0] * s[1]):
        if (n2, g2) in seen or n2 * g2 >= total:
            continue
        seen.add((n2, g2))
        change = {"nodes": n2, "gpus_per_node": g2}
        words = f"{_gpus(n2 * g2)} instead of {total}"
        out.append(("shape", change, f"fits now with `{_flag(change)}` ({words})"))
    return out


def _gpu_types(snapshot: ClusterSnapshot, spec: JobSpec) -> list[tuple[str, Change, str]]:
    """Other GPU types inside the job's data region with enough whole nodes free."""
    if spec.gpu_type == ANY:
        return []
    free = snapshot.capacity.pools
    types = sorted(
        {
            k.gpu_type
            for k in free
            if k.gpu_type != spec.gpu_type
            and (spec.data_region == ANY or k.region == spec.data_region)
            and free[k].eligible(spec.gpus_per_node) >= spec.nodes
        }
    )
    where = f" (in {spec.data_region})" if spec.data_region != ANY else ""
    out: list[tuple[str, Change, str]] = []
    for t in types:
        change = {"gpu_type": t}
        out.append(("gpu_type", change, f"fits now with `{_flag(change)}`{where}"))
    return out


def _queues(
    snapshot: ClusterSnapshot, spec: JobSpec, pools: list[PoolKey], queues: Collection[str] | None
) -> list[tuple[str, Change, str]]:
    """Other queues the team may use, whose quota would take the job now."""
    ledger = QuotaLedger(snapshot.queues, snapshot.queue_usage)
    types = sorted({k.gpu_type for k in pools})
    out: list[tuple[str, Change, str]] = []
    for name in sorted(snapshot.queues):
        if name == spec.queue or (queues is not None and name not in queues):
            continue
        if any(ledger.admit(name, t, spec.gpus).ok for t in types):
            change = {"queue": name}
            out.append(
                ("queue", change, f"fits now in queue `{name}` (your token may use it): `{_flag(change)}`")
            )
    return out


def _time_limits(
    snapshot: ClusterSnapshot, plan: Plan, now: float, spec: JobSpec, pools: list[PoolKey]
) -> list[tuple[str, Change, str]]:
    """A time limit that ends before a backfill reservation in its pools starts."""
    capacity = snapshot.capacity
    limits: set[float] = set()
    for r in plan.reserves:
        if r.start is None or not r.nodes or capacity.pool_of(r.nodes[0]) not in pools:
            continue
        limit = _round_down(r.start - now)
        if limit >= 60 and (spec.time_limit_s is None or spec.time_limit_s > limit):
            limits.add(limit)
    out: list[tuple[str, Change, str]] = []
    for limit in sorted(limits, reverse=True):
        change = {"time_limit_s": limit}
        why = "backfill: it ends before GPUs held for an earlier job are needed"
        out.append(("time_limit", change, f"fits now with `{_flag(change)}` ({why})"))
    return out


# --- words ---------------------------------------------------------------------------------------


def _round_down(seconds: float) -> float:
    """A limit people write: whole minutes, 5 min above 10 min, 15 min above an hour."""
    step = 900 if seconds > 3600 else 300 if seconds > 600 else 60
    return float(math.floor(seconds / step) * step)


def _gpus(n: int) -> str:
    return "1 GPU" if n == 1 else f"{n} GPUs"


def _shape(nodes: int, gpus_per_node: int) -> str:
    return _gpus(gpus_per_node) if nodes == 1 else f"{nodes}×{gpus_per_node} GPUs"


def _time(seconds: float) -> str:
    """'45m', '2h', '1h30m': what `corral submit --time` reads."""
    minutes = int(seconds // 60)
    h, m = divmod(minutes, 60)
    if not h:
        return f"{m}m"
    return f"{h}h{m}m" if m else f"{h}h"


def _flag(change: Change) -> str:
    """The `corral submit` flags that make the change."""
    parts: list[str] = []
    if "nodes" in change:
        n, g = int(change["nodes"]), int(change["gpus_per_node"])
        if n == 1 and g <= NODE_GPUS:
            parts.append(f"--gpus {g}")
        elif g == NODE_GPUS:
            parts.append(f"--gpus {n * g}")
        else:
            parts.append(f"-N {n} --gpus-per-node {g}")
    if "gpu_type" in change:
        parts.append(f"--gpu-type {change['gpu_type']}")
    if "queue" in change:
        parts.append(f"--queue {change['queue']}")
    if "time_limit_s" in change:
        parts.append(f"--time {_time(float(change['time_limit_s']))}")
    return " ".join(parts)
