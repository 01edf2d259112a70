"""Step 1, order: which pending job goes next.

Within a queue the order is static (it does not depend on `now`), so owners keep each queue's
pending jobs sorted once with `pending_key` and a cycle only merges the queue heads:

    score(job) = class value + (now - submitted) / aging_s_per_point
                 - service_level_weight × service level (Tiresias' discretized attained GPU-time)
                 - fair_share_weight × share(queue)

Linear aging means an older job eventually outranks any newer one of a higher class or a lower
service level, so nothing starves; the fair-share term is the queue's weighted dominant share of
the cluster, counting both what it holds now and its decayed past usage (as Slurm's fairshare
factor does).

Before the score, three tiers (Kueue orders entries that fit their nominal quota before those that
borrow): 0, a job that fits within its queue's nominal quota; 1, a job of a queue below its nominal
quota that would borrow for the rest; 2, a job of a queue at or above its nominal quota. Otherwise a
borrower ordered first would take the GPUs a lending queue just reclaimed (or is about to), and the
two would preempt each other for ever.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

from scheduler.model.cluster import ANY
from scheduler.model.job import Job
from scheduler.model.snapshot import ClusterSnapshot
from scheduler.policy.config import PolicyConfig
from scheduler.policy.quota import nominal_quota

PendingKey = Callable[[Job], tuple[float | str, ...]]


def las_level(attained_gpu_s: float, thresholds: Sequence[float]) -> int:
    """Tiresias' discretized 2D-LAS queue: 0 below the first threshold of GPU-seconds, then 1, ..."""
    level = 0
    for limit in thresholds:
        if attained_gpu_s < limit:
            break
        level += 1
    return level


def pending_key(config: PolicyConfig, priority_values: Mapping[str, int]) -> PendingKey:
    """The within-queue sort key of the policy named in `config` (smaller sorts first)."""
    if config.name == "fifo":
        return lambda job: (job.submitted_at, _tiebreak(job))
    if config.name == "sjf":
        return lambda job: (_runtime(job), job.submitted_at, _tiebreak(job))
    if config.name == "las":
        th = config.las_baseline_thresholds_gpu_s
        return lambda job: (las_level(job.attained_gpu_s, th), job.submitted_at, _tiebreak(job))
    static = corral_static(config, priority_values)
    return lambda job: (static(job), _tiebreak(job))


def order_signature(config: PolicyConfig, priority_values: Mapping[str, int]) -> tuple[object, ...]:
    """Everything `pending_key(config, priority_values)` depends on: an owner that keeps pending
    jobs sorted with that key says so with this (model/pending_shapes.py)."""
    return (
        config.name,
        config.aging_s_per_point,
        config.service_level_weight,
        config.las_thresholds_gpu_s,
        config.las_baseline_thresholds_gpu_s,
        tuple(sorted(priority_values.items())),
    )


def corral_static(config: PolicyConfig, priority_values: Mapping[str, int]) -> Callable[[Job], float]:
    """The part of corral's -score that differs between jobs of one queue (fair share is the
    queue's): class value, submission time (aging) and service level."""
    aging = config.aging_s_per_point
    th = config.las_thresholds_gpu_s
    per_level = config.service_level_weight

    def static(job: Job) -> float:
        value = priority_values.get(job.spec.priority, 0)
        return job.submitted_at / aging - value + per_level * las_level(job.attained_gpu_s, th)

    return static


def _runtime(job: Job) -> float:
    if job.runtime_hint_s is not None:
        return job.runtime_hint_s
    return job.spec.time_limit_s if job.spec.time_limit_s is not None else math.inf


def _tiebreak(job: Job) -> str:
    return job.id  # unique, so exact ties break the same way in every run


class FairShare:
    """Each queue's weighted dominant share, updated as the cycle hands out GPUs."""

    def __init__(self, snapshot: ClusterSnapshot, config: PolicyConfig) -> None:
        self._capacity = {t: max(1, g) for t, g in snapshot.gpus_by_type.items()}
        total = max(1, sum(snapshot.gpus_by_type.values()))
        # Decayed GPU-seconds as a share of what the whole cluster could deliver in one half-life.
        horizon = total * config.usage_half_life_s
        self._usage = {q: dict(u) for q, u in snapshot.queue_usage.items()}
        self._history = {q: snapshot.usage_history.get(q, 0.0) / horizon for q in snapshot.queues}
        self._weights = {q.name: q.weight for q in snapshot.queues.values()}
        self._cache: dict[str, float] = {}
        self._revisions: dict[str, int] = {}

    def revision(self, queue: str) -> int:
        """Bumps each time the queue is handed GPUs: what was derived from `used` expires."""
        return self._revisions.get(queue, 0)

    def used(self, queue: str, gpu_type: str) -> int:
        """GPUs of the type the queue holds, with what this cycle handed it so far."""
        return self._usage.get(queue, {}).get(gpu_type, 0)

    def share(self, queue: str) -> float:
        cached = self._cache.get(queue)
        if cached is not None:
            return cached
        used = self._usage.get(queue, {})
        dominant = max((g / self._capacity.get(t, 1) for t, g in used.items()), default=0.0)
        share = (dominant + self._history.get(queue, 0.0)) / self._weights.get(queue, 1.0)
        self._cache[queue] = share
        return share

    def add(self, queue: str, gpu_type: str, gpus: int) -> None:
        per_type = self._usage.setdefault(queue, {})
        per_type[gpu_type] = per_type.get(gpu_type, 0) + gpus
        self._cache.pop(queue, None)
        self._revisions[queue] = self._revisions.get(queue, 0) + 1


class QueueMerger:
    """Yields pending jobs across queues in score order, lazily (a heap over queue heads).

    With a fair share (corral), a queue's score is recomputed each time it is popped, so a queue
    that just received GPUs falls back behind the others.
    """

    def __init__(
        self,
        snapshot: ClusterSnapshot,
        config: PolicyConfig,
        now: float,
        key: PendingKey,
        fair_share: FairShare | None,
        static: Callable[[Job], float] | None = None,
        *,
        heads: bool = True,
    ) -> None:
        """`static`: corral_static's value of a job, if the caller keeps it (it must agree).
        `heads`: False for a subclass that walks the pending jobs its own way (group_walk.py)."""
        self._config = config
        self._now = now
        self._key = key
        self._fair_share = fair_share
        self._queues = snapshot.queues
        self._types = tuple(snapshot.gpus_by_type)
        self._capacity = snapshot.capacity
        self._fits_now: dict[tuple[str, str, int, int], bool] = {}  # (region, type, nodes, GPUs/node)
        self._values = {name: pc.value for name, pc in snapshot.priority_classes.items()}
        self._static = static if static is not None else corral_static(config, self._values)
        self._now_points = now / config.aging_s_per_point
        self._shares: dict[str, tuple[int, float]] = {}  # queue → (its revision, weight × share)
        self._iters: dict[str, Iterator[Job]] = {}
        # (queue, region, GPU type, nodes, GPUs per node, the queue's revision) → tier: a deep
        # backlog asks the same few
        self._tiers: dict[tuple[str, str, str, int, int, int], int] = {}
        self._heap: list[tuple[tuple[float | str, ...], str, Job]] = []
        for queue, jobs in snapshot.pending.items() if heads else ():
            if jobs:
                it = iter(jobs)
                self._iters[queue] = it
                head = next(it)
                heapq.heappush(self._heap, (self.rank(queue, head), queue, head))

    def rank(self, queue: str, job: Job) -> tuple[float | str, ...]:
        if self._fair_share is None:
            return self._key(job)
        # -score = static part (class, age, service level) + fair-share penalty of the queue.
        revision = self._fair_share.revision(queue)
        neg_score = self._static(job) - self._now_points + self._penalty(queue, revision)
        return (self._at_quota(queue, job, revision), neg_score, job.submitted_at, job.id)

    def tier_and_penalty(self, queue: str, job: Job) -> tuple[int, float]:
        """The parts of rank(queue, job) that are the same for all the queue's jobs of `job`'s GPU
        type and count until the queue is next handed GPUs (with a fair share: corral). The rank
        is then (tier, static - now_points + penalty, submitted_at, id) (group_walk.py)."""
        fair = self._fair_share
        assert fair is not None
        revision = fair.revision(queue)
        return self._at_quota(queue, job, revision), self._penalty(queue, revision)

    def _penalty(self, queue: str, revision: int) -> float:
        """The queue's fair-share part of -score, worked out once per queue until it is handed GPUs."""
        known = self._shares.get(queue)
        if known is None or known[0] != revision:
            assert self._fair_share is not None
            known = (revision, self._config.fair_share_weight * self._fair_share.share(queue))
            self._shares[queue] = known
        return known[1]

    @property
    def now_points(self) -> float:
        return self._now_points

    def _at_quota(self, queue: str, job: Job, revision: int) -> int:
        """The job's tier (see the module docstring): 0 fits within nominal quota, 1 its queue is
        below nominal quota but it would borrow, 2 its queue is at or above nominal quota."""
        q = self._queues.get(queue)
        fair = self._fair_share
        if q is None or fair is None:
            return 0
        spec = job.spec
        key = (queue, spec.data_region, spec.gpu_type, spec.nodes, spec.gpus_per_node, revision)
        tier = self._tiers.get(key)
        if tier is None:
            types = self._types if spec.gpu_type == ANY else (spec.gpu_type,)
            need = spec.gpus
            roomy = [t for t in types if fair.used(queue, t) + need <= nominal_quota(q, t)]
            if roomy and not self._would_borrow_now(
                spec.data_region, spec.nodes, spec.gpus_per_node, types, roomy
            ):
                tier = 0
            else:
                tier = 1 if any(fair.used(queue, t) < nominal_quota(q, t) for t in types) else 2
            self._tiers[key] = tier
        return tier

    def _would_borrow_now(
        self, region: str, nodes: int, gpus_per_node: int, types: Sequence[str], roomy: Sequence[str]
    ) -> bool:
        """A job of any GPU type whose queue has nominal quota left on some types (`roomy`) but
        whose gang fits, at the cycle's start, only on others: placed now, it would borrow. It
        ranks as a borrower then, or it would take GPUs a lending queue just reclaimed on those
        types and be reclaimed again, for ever (tests/sim/test_reclaim.py)."""
        if len(roomy) == len(types):
            return False
        return not any(self._fits(region, t, nodes, gpus_per_node) for t in roomy) and any(
            self._fits(region, t, nodes, gpus_per_node) for t in types if t not in roomy
        )

    def _fits(self, region: str, gpu_type: str, nodes: int, gpus_per_node: int) -> bool:
        key = (region, gpu_type, nodes, gpus_per_node)
        fits = self._fits_now.get(key)
        if fits is None:
            fits = self._fits_now[key] = any(
                pool.eligible(gpus_per_node) >= nodes
                for k, pool in self._capacity.pools.items()
                if k.gpu_type == gpu_type and (region == ANY or k.region == region)
            )
        return fits

    def passed_over(self) -> int:
        """Jobs walked past, without being yielded, since the last one yielded: none here (the
        group walk passes over jobs whose outcome is known)."""
        return 0

    def __iter__(self) -> Iterator[Job]:
        heap = self._heap
        while heap:
            _, queue, job = heapq.heappop(heap)
            yield job
            following = next(self._iters[queue], None)
            if following is not None:
                heapq.heappush(heap, (self.rank(queue, following), queue, following))
