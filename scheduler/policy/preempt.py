"""Step 5, preempt: the cheapest set of running jobs whose GPUs let a waiting job start.

Who may be a victim of `job` (a job protects itself by `preemptible: false`, by its minimum
runtime and the default one after each start, and by having been preempted
`max_preemptions_per_job` times, so nothing thrashes):
  - priority: a job of a lower priority class in the same queue, if job's class preempts lower
    ones; in another queue too while job's queue then stays within its nominal quota;
  - reclaim: a job of another queue that borrows this GPU type, while job's queue then stays
    within its nominal quota (so no queue preempts others to borrow). Protection is granted only
    on a queue's own quota: a job placed on borrowed quota (`borrowed_gpus > 0`) is a reclaim
    victim whatever it asked for (Kueue's rule), or a lending queue could wait for ever. Its grace
    period still applies. Victims are taken from a queue only while it still borrows after the
    victims taken before them, so reclaim does not push a borrower below its own quota;
  - service (Tiresias' insight: a job that has run long is likely to run longer still): a job of
    the same or a lower class whose attained GPU-seconds put it in a higher service level than
    `job`, in the same queue, in a borrowing queue, or anywhere if job's queue stays within its
    quota. The per-job preemption cap bounds what it can cost.
Heuristic (as Kueue's): take candidates cheapest first — lowest class, then least work lost since
their checkpoint, then biggest — until the job fits; then give back, in reverse, those it does not
need. If it does not fit with every candidate gone, nobody is preempted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from scheduler.model.capacity import CapacityIndex
from scheduler.model.cluster import PoolKey
from scheduler.model.job import Job
from scheduler.model.plan import PREEMPT_RULES, Allocation
from scheduler.model.snapshot import ClusterSnapshot, RunningChange, RunningJob
from scheduler.policy.config import PolicyConfig
from scheduler.policy.order import las_level
from scheduler.policy.place import find_allocation
from scheduler.policy.quota import QuotaLedger

_PRIORITY, _RECLAIM, _SERVICE = 0, 1, 2  # why a candidate may be preempted (indexes PREEMPT_RULES)
# The rules that take a candidate as a bit set (bit w for rule w), and each set as the rules in it.
_WHYS: tuple[tuple[int, ...], ...] = tuple(
    tuple(w for w in (_PRIORITY, _RECLAIM, _SERVICE) if bits >> w & 1) for bits in range(8)
)
CUT, LEFT_OUT, NO_VICTIM_NEEDED = 1, 2, 4  # search_victims' notes
# A search first asks whether every candidate a rule could take would do, in a pool of at most
# this many times max_victims candidates: one pass over them, cheaper than costing and sorting them
# where most searches fail (a contended replay), but in a large pool (bench/cycle.py's) a walk in
# cost order usually ends long before it has looked at them all.
ALL_AT_ONCE_UP_TO = 4


@dataclass(frozen=True, slots=True)
class Victims:
    jobs: tuple[RunningJob, ...]
    rules: tuple[str, ...]  # for each victim, Preempt.rule: what its team may be told
    reason: str  # names jobs and queues: for administrators only
    allocation: Allocation  # where the job fits once they are gone (free GPUs and theirs)


def attained(r: RunningJob, now: float) -> float:
    """GPU-seconds the job has had: earlier attempts plus the current one."""
    return r.job.attained_gpu_s + r.gpus * max(0.0, now - r.started_at)


def protected_for_s(r: RunningJob, config: PolicyConfig) -> float:
    """How long after (re)starting a job may not be preempted.

    Exponential backoff: each earlier preemption multiplies the protection, so a job that keeps
    being chosen gets ever longer uninterrupted runs (nothing thrashes, and long jobs still finish)
    without ever being protected for good.
    """
    return max(
        r.job.spec.min_runtime_s,
        backoff_s(config.default_min_runtime_s, config.preemption_backoff, r.job.preemption_count),
    )


def backoff_s(base_s: float, backoff: float, count: int) -> float:
    """base_s × backoff^count, for ever (infinity) where that is beyond a float: a job reclaimed
    hundreds of times (reclaim ignores protection, so nothing else stops the count)."""
    try:
        return base_s * backoff**count
    except OverflowError:
        return math.inf if base_s > 0.0 else 0.0


def can_be_victim(r: RunningJob, now: float, config: PolicyConfig) -> bool:
    """May any rule preempt it: not protected by its spec, its runtime or its preemption count."""
    spec = r.job.spec
    if not spec.preemptible or r.preempting:
        return False
    if r.job.preemption_count >= config.max_preemptions_per_job:
        return False
    return now - r.started_at >= protected_for_s(r, config)


def reclaimable(r: RunningJob) -> bool:
    """May a lending queue take it back whatever its protection: it was placed on borrowed quota."""
    return r.borrowed_gpus > 0 and not r.preempting


class Candidate:
    """A running job that may be preempted, with what the victim choice needs, computed once a cycle.
    Immutable: Final fields in a plain class, for speed (see capacity.RackFree)."""

    __slots__ = ("cost", "level", "protected", "running", "value")
    running: Final[RunningJob]
    value: Final[int]  # its priority class value
    level: Final[int]  # its service level (attained GPU-seconds)
    cost: Final[tuple[float, ...]]  # cheapest first: class, work lost since checkpoint, size, start
    protected: Final[bool]  # only a reclaim may take it (it runs on borrowed quota)

    def __init__(
        self, running: RunningJob, value: int, level: int, cost: tuple[float, ...], protected: bool = False
    ) -> None:
        self.running = running
        self.value = value
        self.level = level
        self.cost = cost
        self.protected = protected


# A candidate as the summary saw it: (job, class value, protected, service level).
_Found = tuple[RunningJob, int, bool, int]
# Rebuild a little before a computed change time: a float sum may round either way at the edge.
_CHANGE_MARGIN_S = 1e-3


@dataclass(frozen=True, slots=True)
class CandidateScan:
    """What VictimCandidates computes from a pool's running jobs at `at`. Nothing in it changes
    before `valid_until` while those jobs do not (a protection ends, a service level is crossed),
    so an owner that keeps its running jobs between cycles may reuse it (snapshot.memo)."""

    at: float
    valid_until: float
    found: tuple[_Found, ...]  # in no particular order (a walk sorts them: VictimCandidates)
    summary: Mapping[str, Mapping[int, int]]
    top: int


def scan_candidates(
    snapshot: ClusterSnapshot, running: Sequence[RunningJob], now: float, config: PolicyConfig
) -> CandidateScan:
    """The pool's jobs some rule may preempt, the summary of them, and until when that holds."""
    values = {name: pc.value for name, pc in snapshot.priority_classes.items()}
    thresholds = config.las_thresholds_gpu_s
    # can_be_victim and protected_for_s, inlined: this loop sees every running job of the pool.
    cap, backoff = config.max_preemptions_per_job, config.preemption_backoff
    base = config.default_min_runtime_s
    summary: dict[str, dict[int, int]] = {}
    top = -1
    found: list[_Found] = []
    valid_until = math.inf
    for r in running:
        job = r.job
        spec = job.spec
        ran = now - r.started_at
        count = job.preemption_count
        fixed = not spec.preemptible or r.preempting or count >= cap  # until the job changes
        try:
            protected_s = max(spec.min_runtime_s, base * backoff**count)
        except OverflowError:  # as backoff_s
            protected_s = math.inf if base > 0.0 else spec.min_runtime_s
        protected = fixed or ran < protected_s
        if protected and not fixed:
            valid_until = min(valid_until, r.started_at + protected_s)
        if protected and not reclaimable(r):
            continue
        value = values.get(spec.priority, 0)
        attained_now = job.attained_gpu_s + r.gpus * max(0.0, ran)  # attained()
        level = las_level(attained_now, thresholds)
        if level < len(thresholds) and r.gpus > 0:
            crossing = r.started_at + (thresholds[level] - job.attained_gpu_s) / r.gpus
            valid_until = min(valid_until, max(crossing, now))
        found.append((r, value, protected, level))
        if not protected and level > top:
            top = level
        _note(summary, r.queue, value, -1 if protected else level)
    return CandidateScan(now, valid_until - _CHANGE_MARGIN_S, tuple(found), summary, top)


def rescan_candidates(
    scan: CandidateScan,
    running: Sequence[RunningJob],
    change: RunningChange,
    snapshot: ClusterSnapshot,
    now: float,
    config: PolicyConfig,
) -> CandidateScan:
    """scan_candidates(snapshot, running, now, config) from `scan`, made of the pool's earlier jobs
    and still valid at `now`, and what changed since: only the added jobs are scanned. The same
    scan but that it may need redoing sooner (valid_until is the earlier of both)."""
    fresh = scan_candidates(snapshot, change.added, now, config)
    removed = change.removed
    found = [f for f in scan.found if id(f[0]) not in removed] if removed else list(scan.found)
    found += fresh.found
    summary: dict[str, dict[int, int]] = {}
    top = -1
    for r, value, protected, level in found:
        if not protected and level > top:
            top = level
        _note(summary, r.queue, value, -1 if protected else level)
    valid_until = min(scan.valid_until, fresh.valid_until)
    return CandidateScan(scan.at, valid_until, tuple(found), summary, top)


# The cost (class, work lost, -GPUs, start, position in the pool), then the job, protected, level.
_Costed = tuple[int, float, int, float, int, RunningJob, bool, int]


class VictimCandidates:
    """The pool's jobs that some rule may preempt, cheapest first, sorted lazily.

    Built for every pool a cycle searches, but walked rarely: the summary ends most searches of a
    deep backlog (on the Philly prefix, 147 of 7,699 were ever walked). So the scan computes
    only what the summary needs; on the first walk the candidates are split by class (the first
    part of the cost) and only the cheapest class is costed and sorted, the next one when that is
    used up; a Candidate is built only when iteration reaches it. Iterating again replays the ones
    already built, then goes on. Ties keep the pool's order (as a stable sort).
    """

    def __init__(
        self,
        snapshot: ClusterSnapshot,
        running: Sequence[RunningJob],
        now: float,
        config: PolicyConfig,
        scan: CandidateScan | None = None,
    ) -> None:
        """`scan`: one made earlier from the same running jobs and still valid at `now`."""
        if scan is None:
            scan = scan_candidates(snapshot, running, now, config)
        self._now = now
        self._running = running
        self._position: dict[int, int] | None = None  # id(job) → its place in `running`, once walked
        self._all: Sequence[_Found] = scan.found
        self._found: Sequence[_Found] | None = scan.found  # split by class on the first walk
        self._classes: list[list[_Found]] = []  # not yet costed, the cheapest class last
        self._costed: list[_Costed] = []  # the class being walked, sorted by cost
        self._next = 0  # the first of them not yet built into a Candidate
        self._sorted: list[Candidate] = []
        self._summary = scan.summary
        self._top = scan.top

    def summary(self) -> Mapping[str, Mapping[int, int]]:
        """queue → class value → the highest service level among its candidates of that class that
        every rule may take (-1 if all of them are protected: only a reclaim may take those).

        Enough to tell, without walking the candidates, that no rule can take any of them.
        """
        return self._summary

    def unordered(self) -> Sequence[_Found]:
        """Every candidate as the scan found it, in no particular order (nothing costed or sorted)."""
        return self._all

    def top_level(self) -> int:
        """The highest service level among those every rule may take (-1 if none)."""
        return self._top

    def _cost_next_class(self) -> None:
        """Cost the cheapest class not costed yet, and sort it: work lost since the checkpoint,
        size (biggest first), start."""
        if self._found is not None:
            by_class: dict[int, list[_Found]] = {}
            for found in self._found:
                by_class.setdefault(found[1], []).append(found)
            self._classes = [by_class[value] for value in sorted(by_class, reverse=True)]
            self._found = None
        if not self._classes:
            return
        now = self._now
        position = self._position
        if position is None:  # the last part of the cost: ties keep the pool's order
            position = self._position = {id(r): i for i, r in enumerate(self._running)}
        costed: list[_Costed] = []
        push = costed.append
        # RunningJob.work_at_risk_s, inlined: this loop sees every candidate of the class.
        for r, value, p, level in self._classes.pop():
            risk = now - r.started_at
            interval = r.checkpoint_interval_s
            if risk < 0.0:
                risk = 0.0
            elif interval is not None:
                risk %= interval
            gpus = r.gpus
            push((value, risk * gpus, -gpus, r.started_at, position[id(r)], r, p, level))
        # Sorted at once, not popped from a heap: a walk that starts on a class almost always
        # goes through all of it (few candidates suit a given preemptor), and one sort is cheaper.
        costed.sort()
        self._costed = costed
        self._next = 0

    def __iter__(self) -> Iterator[Candidate]:
        i = 0
        while True:
            if i == len(self._sorted):
                if self._next == len(self._costed):
                    self._cost_next_class()
                    if self._next == len(self._costed):
                        return
                value, risk, size, started, _, r, protected, level = self._costed[self._next]
                self._next += 1
                cost = (float(value), risk, float(size), started)
                self._sorted.append(Candidate(r, value, level, cost, protected))
            yield self._sorted[i]
            i += 1


def _note(summary: dict[str, dict[int, int]], queue: str, value: int, level: int) -> None:
    by_value = summary.setdefault(queue, {})
    if by_value.get(value, -2) < level:
        by_value[value] = level


def _any_rule_applies(
    summary: Mapping[str, Mapping[int, int]],
    ledger: QuotaLedger,
    queue: str,
    gpu_type: str,
    value: int,
    level: int,
    preempts_lower: bool,
    within_nominal: bool,
    service: bool,
) -> bool:
    """Could some rule take some candidate? The rules of choose_victims over the summary, with
    every candidate counted as not yet taken (so True is only a maybe, False is certain)."""
    for other, by_value in summary.items():
        same_queue = other == queue
        lends_back: bool | None = False if same_queue else None  # asked of the ledger when needed
        if within_nominal and not same_queue:
            lends_back = ledger.over_nominal(other, gpu_type) > 0
            if lends_back:
                return True  # reclaim
        for c_value, top in by_value.items():
            if top < 0:
                continue  # protected: only a reclaim could take them
            if preempts_lower and c_value < value and (same_queue or within_nominal):
                return True
            if service and c_value <= value and top > level:
                if same_queue or within_nominal:
                    return True
                if lends_back is None:
                    lends_back = ledger.over_nominal(other, gpu_type) > 0
                if lends_back:
                    return True
    return False


def choose_victims(
    snapshot: ClusterSnapshot,
    capacity: CapacityIndex,
    ledger: QuotaLedger,
    job: Job,
    pool: PoolKey,
    pool_candidates: Iterable[Candidate],
    taken: set[str],
    now: float,
    config: PolicyConfig,
    taken_gpus: Mapping[str, int] | None = None,
    refunds: Mapping[str, int] | None = None,
) -> Victims | None:
    """The victims that let `job` start in `pool`, or None. `taken` holds the jobs already chosen
    as victims this cycle and `taken_gpus` their GPUs of this pool's type per queue. `refunds` is
    how the cycle's earlier preemptions change each queue's usage of this type once their victims
    are gone (victims' GPUs less their preemptors'); `capacity` may count GPUs that jobs already
    leaving free as free (see CycleState.victim_search_capacity)."""
    victims, _ = search_victims(
        snapshot, capacity, ledger, job, pool, pool_candidates, taken, now, config, taken_gpus, refunds
    )
    return victims


def search_victims(
    snapshot: ClusterSnapshot,
    capacity: CapacityIndex,
    ledger: QuotaLedger,
    job: Job,
    pool: PoolKey,
    pool_candidates: Iterable[Candidate],
    taken: set[str],
    now: float,
    config: PolicyConfig,
    taken_gpus: Mapping[str, int] | None = None,
    refunds: Mapping[str, int] | None = None,
) -> tuple[Victims | None, int]:
    """choose_victims, with notes on how it ended (a bit set): CUT, its candidates were cut at
    `max_victims`; LEFT_OUT, one was left out because its queue no longer borrowed once the
    candidates before it were gone; NO_VICTIM_NEEDED, the job fits with no victim. In the same
    cycle (the same order of candidates), a search that found nothing, neither cut nor needing no
    victim, finds nothing with less free and stricter quota either: fewer rules apply. Neither cut
    nor left out, what it found does not depend on the candidates' order, which moves with the
    clock (the work each would lose). cycle.CycleState.victims_for relies on both."""
    spec = job.spec
    value = snapshot.priority_value(job)
    pc = snapshot.priority_classes.get(spec.priority)
    preempts_lower = pc is not None and pc.preempts_lower
    queue = snapshot.queues.get(spec.queue)
    if queue is None:
        return None, 0
    within_nominal = ledger.within_nominal(spec.queue, pool.gpu_type, spec.gpus)
    level = las_level(job.attained_gpu_s, config.las_thresholds_gpu_s) if config.service_preemption else 0
    if isinstance(pool_candidates, VictimCandidates) and not _any_rule_applies(
        pool_candidates.summary(),
        ledger,
        spec.queue,
        pool.gpu_type,
        value,
        level,
        preempts_lower,
        within_nominal,
        config.service_preemption,
    ):
        return None, 0  # most searches of a deep backlog end here, without walking the candidates
    if (
        isinstance(pool_candidates, VictimCandidates)
        and len(pool_candidates.unordered()) <= ALL_AT_ONCE_UP_TO * config.max_victims
        and not _fits_with_all(
            capacity,
            ledger,
            job,
            pool,
            pool_candidates.unordered(),
            taken,
            taken_gpus or {},
            refunds or {},
            value,
            level,
            preempts_lower,
            within_nominal,
            config.service_preemption,
        )
    ):
        return None, 0  # not even every candidate a rule could take would do: in any order

    candidates: list[tuple[RunningJob, tuple[int, ...]]] = []
    notes = 0
    borrows: dict[str, int] = {}  # queue → GPUs of this type it still uses above its quota
    borrowed: set[str] = set()  # the queues of those that borrowed before any victim was taken
    for c in pool_candidates:
        r = c.running
        if r.id in taken:
            continue
        same_queue = r.queue == spec.queue
        lends_back = False
        if not same_queue:
            over = borrows.get(r.queue)
            if over is None:
                over = ledger.over_nominal(r.queue, pool.gpu_type) - (taken_gpus or {}).get(r.queue, 0)
                borrows[r.queue] = over
                if over > 0:
                    borrowed.add(r.queue)
            lends_back = over > 0
            if not lends_back and r.queue in borrowed:
                notes |= LEFT_OUT  # perhaps: it may still qualify by another rule
        rules = _rules_taking(
            c.protected,
            c.value,
            c.level,
            same_queue,
            lends_back,
            value,
            level,
            preempts_lower,
            within_nominal,
            config.service_preemption,
        )
        if not rules:
            continue
        candidates.append((r, _WHYS[rules]))
        if not same_queue:
            borrows[r.queue] -= r.gpus  # what its queue borrows once it is gone too
        if len(candidates) >= config.max_victims:
            notes |= CUT
            break
    if not candidates:
        return None, notes
    pool_free = capacity.pools[pool].free_gpus if pool in capacity.pools else 0
    if pool_free + sum(r.gpus for r, _ in candidates) < spec.gpus:
        return None, notes  # not enough GPUs even with every candidate gone

    n = spec.nodes
    freed = _Freed(capacity, pool, spec.gpus_per_node)
    admitted = _Admission(ledger, job, pool, refunds or {})
    chosen: list[tuple[RunningJob, tuple[int, ...]]] = []
    fits = False
    for r, why_set in candidates:
        if not freed.holds(r):
            continue
        freed.add(r, 1)
        admitted.add(r, 1)
        chosen.append((r, why_set))
        if freed.fits(n) and admitted.ok():
            fits = True
            break
    if not fits:
        return None, notes
    # Give back, in reverse, every victim the job can do without.
    for r, _whys in reversed(list(chosen)):
        freed.add(r, -1)
        admitted.add(r, -1)
        if freed.fits(n) and admitted.ok():
            chosen = [(c, w) for c, w in chosen if c.id != r.id]
        else:
            freed.add(r, 1)
            admitted.add(r, 1)
    if not chosen:
        return None, notes | NO_VICTIM_NEEDED  # it waits for the jobs already leaving instead
    kinds = sorted({why for _, whys in chosen for why in whys})
    words = {
        _PRIORITY: f"priority: {spec.priority} job {job.id} needs its GPUs",
        _RECLAIM: f"reclaim: queue {spec.queue} takes back its lent {pool.gpu_type} quota for {job.id}",
        _SERVICE: f"service: {job.id} has attained less GPU time",
    }
    scratch = capacity
    for r, _ in chosen:
        scratch = scratch.release(r.allocation)
    allocation = find_allocation(scratch, pool, n, spec.gpus_per_node)
    assert allocation is not None  # enough eligible nodes: find_allocation always assembles a gang
    victims = Victims(
        jobs=tuple(c for c, _ in chosen),
        rules=tuple(",".join(PREEMPT_RULES[w] for w in whys) for _, whys in chosen),
        reason="; ".join(words[k] for k in kinds),
        allocation=allocation,
    )
    return victims, notes


def _rules_taking(
    protected: bool,
    c_value: int,
    c_level: int,
    same_queue: bool,
    lends_back: bool,
    value: int,
    level: int,
    preempts_lower: bool,
    within_nominal: bool,
    service: bool,
) -> int:
    """The rules that may take a candidate (its class value and service level, whether it is
    protected, of the job's queue, or of a queue that borrows) for a job of class value `value`
    and level `level`, as a bit set (bit w for rule w; 0: none): a higher class (a lower one may
    not preempt, and another queue's job only while the job's queue stays within its quota), a
    reclaim of lent quota, or less attained service (Tiresias)."""
    rules = 0
    if not protected and preempts_lower and c_value < value and (same_queue or within_nominal):
        rules |= 1 << _PRIORITY
    if not same_queue and within_nominal and lends_back:
        rules |= 1 << _RECLAIM
    if (
        not protected
        and service
        and c_value <= value
        and c_level > level
        and (same_queue or lends_back or within_nominal)
    ):
        rules |= 1 << _SERVICE
    return rules


def _fits_with_all(
    capacity: CapacityIndex,
    ledger: QuotaLedger,
    job: Job,
    pool: PoolKey,
    found: Sequence[_Found],
    taken: set[str],
    taken_gpus: Mapping[str, int],
    refunds: Mapping[str, int],
    value: int,
    level: int,
    preempts_lower: bool,
    within_nominal: bool,
    service: bool,
) -> bool:
    """Would the job fit and be admitted with every candidate gone that some rule could take, each
    counted as if no other were taken (a queue borrows what it borrows now)? The search takes a
    subset of those, so if not, it finds nothing, whatever the order: then there is no need to
    cost and sort the candidates (most failed searches of a deep backlog)."""
    spec = job.spec
    freed = _Freed(capacity, pool, spec.gpus_per_node)
    admitted = _Admission(ledger, job, pool, refunds)
    lends: dict[str, bool] = {}
    for r, c_value, protected, c_level in found:
        if r.id in taken:
            continue
        same_queue = r.queue == spec.queue
        lends_back = False
        if not same_queue:
            known = lends.get(r.queue)
            if known is None:
                known = lends[r.queue] = (
                    ledger.over_nominal(r.queue, pool.gpu_type) - taken_gpus.get(r.queue, 0) > 0
                )
            lends_back = known
        if not _rules_taking(
            protected,
            c_value,
            c_level,
            same_queue,
            lends_back,
            value,
            level,
            preempts_lower,
            within_nominal,
            service,
        ):
            continue
        if freed.holds(r):
            freed.add(r, 1)
            admitted.add(r, 1)
    return freed.fits(spec.nodes) and admitted.ok()


class _Freed:
    """Which nodes of the pool could hold `gpus_per_node` once the chosen victims are gone.

    find_allocation places a gang whenever the pool has `nodes` nodes with `gpus_per_node` free
    (one rack if it can, else across racks), so counting those nodes decides whether the job fits,
    without building a new free-GPU index per candidate.
    """

    def __init__(self, capacity: CapacityIndex, pool: PoolKey, gpus_per_node: int) -> None:
        self._capacity = capacity
        self._pool = pool
        self._g = gpus_per_node
        free = capacity.pool(pool)
        self._eligible = free.eligible(gpus_per_node) if free is not None else 0
        self._free: dict[str, int] = {}  # node → free GPUs with the victims chosen so far gone

    def holds(self, r: RunningJob) -> bool:
        """Are all of its GPUs held in the pool's index (so that its leaving frees them)?"""
        cap, pool = self._capacity, self._pool
        for na in r.allocation.nodes:
            if cap.pool_of(na.node) != pool:
                return False
            free = cap.free_on(na.node)
            if free and not set(free).isdisjoint(na.gpus):
                return False
        return True

    def add(self, r: RunningJob, sign: int) -> None:
        """Count `r` as gone (sign 1) or back (sign -1)."""
        for na in r.allocation.nodes:
            before = self._free.get(na.node)
            if before is None:
                before = len(self._capacity.free_on(na.node))
            after = before + sign * len(na.gpus)
            self._free[na.node] = after
            self._eligible += (after >= self._g) - (before >= self._g)

    def fits(self, nodes: int) -> bool:
        return self._eligible >= nodes


class _Admission:
    """Would the job be admitted with the chosen victims gone (their GPUs refunded to their queues)?"""

    def __init__(self, ledger: QuotaLedger, job: Job, pool: PoolKey, refunds: Mapping[str, int]) -> None:
        self._ledger = ledger
        self._spec = job.spec
        self._gpu_type = pool.gpu_type
        # The cycle's earlier preemptions count as done: their victims leave whatever this job does.
        self._refunds: dict[str, int] = {q: g for q, g in refunds.items() if g}
        # Refunds only lower usage: admitted now, admitted with any victims gone.
        spec = job.spec
        self._now = (
            ledger.admits_after(spec.queue, pool.gpu_type, spec.gpus, dict(self._refunds))
            if self._refunds
            else ledger.admit(spec.queue, pool.gpu_type, spec.gpus).ok
        )
        self._known: bool | None = self._now  # the answer for the current refunds, if known
        self._cohort = ledger.cohort_of(job.spec.queue)

    def add(self, r: RunningJob, sign: int) -> None:
        if self._now or r.gpu_type != self._gpu_type:
            return  # another type's GPUs change nothing here
        self._refunds[r.queue] = self._refunds.get(r.queue, 0) + sign * r.gpus
        if r.queue == self._spec.queue or (
            self._cohort is not None and self._ledger.cohort_of(r.queue) == self._cohort
        ):
            self._known = None  # only its own queue's and its cohort's usage count

    def ok(self) -> bool:
        if self._known is None:
            spec = self._spec
            refunds = {q: g for q, g in self._refunds.items() if g}
            self._known = self._ledger.admits_after(spec.queue, self._gpu_type, spec.gpus, refunds)
        return self._known
