"""The invariants `corral check` verifies, as pure functions over what was read.

`find_violations(store, ray)` recomputes from scratch what must hold — from the store's committed
state (one snapshot) and, if given, what Ray reports — and returns every violation with the ids
involved. Nothing here reads a file, a database or Ray: tests feed it hand-built broken states.

Each violation says whether it compares the store with Ray (`settles`): such a finding can be a
moment of an operation in flight (a placement group being created for a STARTING job, or being
removed just after a job ended; Ray's free GPUs are sampled by its raylets), so the caller confirms
it on a second reading before reporting it (scheduler/check/run.py). A finding of the store alone is
final: the controller commits each step in one transaction, so every committed snapshot must hold
them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.control.transitions import holds_gpus
from scheduler.model.cluster import ANY, Node
from scheduler.model.job import JobState
from scheduler.model.queue import Queue
from scheduler.model.records import JobRecord
from scheduler.policy.quota import QuotaLedger

# Kinds of violation (stable names: scripts and the chaos harness match on them).
GPU_HELD_TWICE = "gpu_held_twice"
ALLOCATION_ROWS = "allocation_rows"  # the allocations table disagrees with the jobs' allocations
OVER_CAPACITY = "over_capacity"
NODE_MISMATCH = "node_mismatch"  # Corral's allocated GPUs on a node ≠ what Ray holds there
GPUS_OUTSIDE_PLACEMENT_GROUPS = "gpus_outside_placement_groups"  # in use in Ray, held by no placement group
USAGE_MISMATCH = "usage_mismatch"  # persisted queue usage ≠ recount of live allocations
OVER_QUOTA = "over_quota"  # a queue without a cohort above its nominal quota
OVER_BORROWING_LIMIT = "over_borrowing_limit"
COHORT_OVERCOMMITTED = "cohort_overcommitted"  # a cohort borrows more than its queues lend
GANG_PARTIAL = "gang_partial"
OUTSIDE_REGION = "outside_region"
UNEXPECTED_PLACEMENT_GROUP = "unexpected_placement_group"
UNEXPECTED_ACTOR = "unexpected_actor"
MISSING_PLACEMENT_GROUP = "missing_placement_group"
MISSING_JOB = "missing_job"

KINDS = (
    GPU_HELD_TWICE,
    ALLOCATION_ROWS,
    OVER_CAPACITY,
    NODE_MISMATCH,
    GPUS_OUTSIDE_PLACEMENT_GROUPS,
    USAGE_MISMATCH,
    OVER_QUOTA,
    OVER_BORROWING_LIMIT,
    COHORT_OVERCOMMITTED,
    GANG_PARTIAL,
    OUTSIDE_REGION,
    UNEXPECTED_PLACEMENT_GROUP,
    UNEXPECTED_ACTOR,
    MISSING_PLACEMENT_GROUP,
    MISSING_JOB,
)
_SHOWN = 20  # ids listed in one message at most
UNKNOWN_TYPE = "unknown"


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    message: str
    jobs: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    queue: str = ""
    name: str = ""  # a Ray placement group's or actor's name
    gpus: float = 0.0  # the GPUs in question, where a count is the finding (GPUS_OUTSIDE_PLACEMENT_GROUPS)
    settles: bool = False  # compares the store with Ray: confirmed on a second reading

    @property
    def key(self) -> tuple[str, tuple[str, ...], tuple[str, ...], str, str]:
        """What identifies the finding across two readings (its numbers may change in between)."""
        return (self.kind, self.jobs, self.nodes, self.queue, self.name)

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "message": self.message,
            "jobs": list(self.jobs),
            "nodes": list(self.nodes),
            "queue": self.queue or None,
            "name": self.name or None,
            "gpus": self.gpus or None,
        }


@dataclass(frozen=True, slots=True)
class StoreState:
    """What the store says, read in one snapshot (scheduler/check/read.py)."""

    jobs: Sequence[JobRecord]  # every job not in a terminal state
    allocation_rows: Mapping[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    # ^ (node, gpu) → (job id, attempt): the allocations table, UNIQUE(node, gpu)
    usage: Mapping[str, int] = field(default_factory=dict)  # queue → GPUs the controller charges it
    queues: Sequence[Queue] = ()
    acknowledged: Sequence[str] = ()  # job ids the API acknowledged (given by the caller)
    present: frozenset[str] = frozenset()  # which of `acknowledged` the store has
    submitted_without_row: Sequence[str] = ()  # ids with a SUBMITTED event but no job row
    id_gaps: Sequence[tuple[int, int]] = ()  # [first, last] ids missing below the high-water mark


@dataclass(frozen=True, slots=True)
class RayGroup:
    """A Corral placement group in Ray (named corral-<job>-<attempt>), not removed."""

    name: str
    job_id: str
    attempt: int
    state: str  # PENDING | CREATED | RESCHEDULING | ...
    bundles: tuple[tuple[str | None, float], ...] = ()  # (Corral node id or None, GPUs) per bundle


@dataclass(frozen=True, slots=True)
class RayActor:
    name: str
    job_id: str
    attempt: int
    rank: int


@dataclass(frozen=True, slots=True)
class RayState:
    """What Ray says (scheduler/check/read.py): its alive GPU nodes as Corral nodes, the GPUs in use
    on each (capacity − available, whoever holds them), the GPUs that placement groups (anyone's)
    hold on each, and Corral's named groups and actors."""

    nodes: Mapping[str, Node]
    used_gpus: Mapping[str, float] = field(default_factory=dict)
    groups: Sequence[RayGroup] = ()
    actors: Sequence[RayActor] = ()
    grouped_gpus: Mapping[str, float] | None = None  # None: not read (count them all as grouped)


def find_violations(store: StoreState, ray: RayState | None = None) -> list[Violation]:
    """Every invariant that does not hold (see the module docstring); [] when all hold."""
    holding = [r for r in store.jobs if holds_gpus(r)]
    out: list[Violation] = []
    out += gpus_held_twice(holding)
    out += allocation_rows(holding, store.allocation_rows)
    out += gangs_whole(holding)
    out += missing_jobs(store)
    nodes = ray.nodes if ray is not None else {}
    usage = queue_usage(holding, nodes)
    out += usage_matches(usage, store.usage, store.queues)
    if ray is not None:  # quotas are per GPU type: a node's type comes from Ray
        out += within_quota(usage, store.queues)
        out += node_capacity(holding, ray)
        out += in_region(holding, ray.nodes)
        out += ray_matches(holding, ray)
    return out


# --- the store alone -----------------------------------------------------------------------------------


def gpus_held_twice(holding: Iterable[JobRecord]) -> list[Violation]:
    """No GPU is held by two jobs (nor twice by one)."""
    holders: dict[tuple[str, int], list[str]] = {}
    for rec in holding:
        assert rec.allocation is not None
        for na in rec.allocation.nodes:
            for gpu in na.gpus:
                holders.setdefault((na.node, gpu), []).append(rec.id)
    return [
        Violation(
            GPU_HELD_TWICE,
            f"GPU {gpu} of node {node} is held by jobs {', '.join(jobs)}",
            jobs=tuple(jobs),
            nodes=(node,),
        )
        for (node, gpu), jobs in sorted(holders.items())
        if len(jobs) > 1
    ]


def allocation_rows(
    holding: Iterable[JobRecord], rows: Mapping[tuple[str, int], tuple[str, int]]
) -> list[Violation]:
    """The allocations table (one row per GPU, UNIQUE(node, gpu)) holds exactly the GPUs of the jobs
    holding GPUs, with their current attempt."""
    want: dict[str, set[tuple[str, int]]] = {}
    attempts: dict[str, int] = {}
    for rec in holding:
        assert rec.allocation is not None
        want[rec.id] = {(na.node, g) for na in rec.allocation.nodes for g in na.gpus}
        attempts[rec.id] = rec.job.restart_count
    have: dict[str, set[tuple[str, int]]] = {}
    wrong_attempt: set[str] = set()
    for gpu, (job_id, attempt) in rows.items():
        have.setdefault(job_id, set()).add(gpu)
        if job_id in attempts and attempt != attempts[job_id]:
            wrong_attempt.add(job_id)
    out: list[Violation] = []
    for job_id in sorted(want.keys() | have.keys(), key=_id_order):
        missing = want.get(job_id, set()) - have.get(job_id, set())
        extra = have.get(job_id, set()) - want.get(job_id, set())
        parts = []
        if job_id not in want:
            parts.append(f"holds {len(extra)} GPU row(s) ({_gpus(extra)}) but is not holding GPUs")
        else:
            if missing:
                parts.append(f"has no allocation row for {_gpus(missing)}")
            if extra:
                parts.append(f"has allocation rows for {_gpus(extra)} outside its allocation")
            if job_id in wrong_attempt:
                parts.append(f"has rows of another attempt than its current {attempts[job_id]}")
        if parts:
            nodes = tuple(sorted({n for n, _ in missing | extra}))
            out.append(Violation(ALLOCATION_ROWS, f"job {job_id} " + "; ".join(parts), (job_id,), nodes))
    return out


def gangs_whole(holding: Iterable[JobRecord]) -> list[Violation]:
    """A job holds GPUs on exactly `nodes` distinct nodes, `gpus_per_node` distinct GPUs on each."""
    out: list[Violation] = []
    for rec in holding:
        assert rec.allocation is not None
        spec = rec.job.spec
        nodes = rec.allocation.node_ids
        problems = []
        if len(set(nodes)) != len(nodes):
            problems.append("names a node twice")
        if len(nodes) != spec.nodes:
            problems.append(f"holds {len(nodes)} of its {spec.nodes} nodes")
        short = [na.node for na in rec.allocation.nodes if len(set(na.gpus)) != spec.gpus_per_node]
        if short:
            problems.append(f"does not hold exactly {spec.gpus_per_node} GPUs on {', '.join(short)}")
        if problems:
            out.append(
                Violation(GANG_PARTIAL, f"job {rec.id} " + "; ".join(problems), (rec.id,), tuple(nodes))
            )
    return out


def missing_jobs(store: StoreState) -> list[Violation]:
    """Every job the API acknowledged is in the store (see README, `corral check`)."""
    out: list[Violation] = []
    lost = [j for j in store.acknowledged if j not in store.present]
    if lost:
        out.append(
            Violation(
                MISSING_JOB,
                f"{len(lost)} acknowledged job(s) not in the store: {_ids(lost)}",
                jobs=tuple(lost),
            )
        )
    if store.submitted_without_row:
        ids = tuple(store.submitted_without_row)
        out.append(
            Violation(
                MISSING_JOB,
                f"{len(ids)} job(s) have a SUBMITTED event but no job row: {_ids(ids)}",
                jobs=ids,
            )
        )
    if store.id_gaps:
        missing = sum(last - first + 1 for first, last in store.id_gaps)
        spans = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in store.id_gaps[:_SHOWN])
        out.append(
            Violation(
                MISSING_JOB,
                f"{missing} job id(s) below the store's high-water mark are missing: {spans}",
                jobs=tuple(str(a) for a, _ in store.id_gaps),
            )
        )
    return out


def queue_usage(holding: Iterable[JobRecord], nodes: Mapping[str, Node]) -> dict[str, dict[str, int]]:
    """Queue → GPU type → GPUs its jobs hold, recounted from the live allocations. A job's GPU type is
    its first node's (as the controller's snapshot takes it); without that node, its spec's."""
    usage: dict[str, dict[str, int]] = {}
    for rec in holding:
        assert rec.allocation is not None
        first = nodes.get(rec.allocation.node_ids[0]) if rec.allocation.nodes else None
        gpu_type = first.gpu_type if first is not None else rec.job.spec.gpu_type
        if gpu_type == ANY:
            gpu_type = UNKNOWN_TYPE
        per_type = usage.setdefault(rec.job.spec.queue, {})
        per_type[gpu_type] = per_type.get(gpu_type, 0) + rec.allocation.gpus
    return usage


def usage_matches(
    usage: Mapping[str, Mapping[str, int]], persisted: Mapping[str, int], queues: Sequence[Queue]
) -> list[Violation]:
    """What the controller persisted as each queue's GPUs (queue_usage.gpus, the fair-share charge)
    equals the recount. It is written with the step that next runs a cycle, so it may trail a
    change by a step: confirmed on a second reading."""
    out: list[Violation] = []
    for q in queues:
        counted = sum(usage.get(q.name, {}).values())
        charged = persisted.get(q.name, 0)
        if counted != charged:
            out.append(
                Violation(
                    USAGE_MISMATCH,
                    f"queue {q.name}: its jobs hold {counted} GPUs, the controller charges it {charged}",
                    queue=q.name,
                    settles=True,
                )
            )
    return out


def within_quota(usage: Mapping[str, Mapping[str, int]], queues: Sequence[Queue]) -> list[Violation]:
    """Invariant 3 with the policy's own ledger (scheduler/policy/quota.py): a queue without a cohort
    stays within its nominal quota; a queue borrows at most its borrowing limit; in each cohort what
    its queues use above their quotas is covered by what its queues lend (idle quota, each at most
    its lending limit) — the condition `QuotaLedger.admit` keeps at every admission."""
    by_name = {q.name: q for q in queues}
    # A removed queue's jobs run on outside any quota; a GPU type not known (a job on a node Ray does
    # not report: node_mismatch says so) is not charged to any quota.
    known = {q: {t: g for t, g in u.items() if t != UNKNOWN_TYPE} for q, u in usage.items() if q in by_name}
    ledger = QuotaLedger(by_name, known)
    out: list[Violation] = []
    cohorts: dict[str, list[Queue]] = {}
    types = {t for q in queues for t in q.quota} | {t for u in known.values() for t in u}
    for q in queues:
        if q.cohort is not None:
            cohorts.setdefault(q.cohort, []).append(q)
            continue
        for gpu_type in sorted(types):
            used = ledger.used(q.name, gpu_type)
            if used > q.nominal(gpu_type):
                out.append(
                    Violation(
                        OVER_QUOTA,
                        f"queue {q.name} (no cohort) holds {used} {gpu_type} GPUs, "
                        f"quota {q.nominal(gpu_type)}",
                        queue=q.name,
                    )
                )
    for q in queues:
        if (
            q.cohort is not None
            and q.borrowing_limit is not None
            and ledger.borrowed(q.name) > q.borrowing_limit
        ):
            out.append(
                Violation(
                    OVER_BORROWING_LIMIT,
                    f"queue {q.name} borrows {ledger.borrowed(q.name)} GPUs, limit {q.borrowing_limit}",
                    queue=q.name,
                )
            )
    for cohort, members in sorted(cohorts.items()):
        for gpu_type in sorted(types):
            borrowed = ledger.borrowers(cohort, gpu_type)
            lent = sum(ledger.lendable(m, gpu_type) for m in members)
            if borrowed > lent:
                out.append(
                    Violation(
                        COHORT_OVERCOMMITTED,
                        f"cohort {cohort}: its queues use {borrowed} {gpu_type} GPUs above their quotas, "
                        f"but lend only {lent}",
                        queue=cohort,
                    )
                )
    return out


# --- the store against Ray -------------------------------------------------------------------------------


def node_capacity(holding: Iterable[JobRecord], ray: RayState) -> list[Violation]:
    """Per node, the GPUs allocated are within its capacity (count and indices)."""
    held: dict[str, set[int]] = {}
    jobs: dict[str, list[str]] = {}
    for rec in holding:
        assert rec.allocation is not None
        for na in rec.allocation.nodes:
            held.setdefault(na.node, set()).update(na.gpus)
            jobs.setdefault(na.node, []).append(rec.id)
    out: list[Violation] = []
    for node_id, gpus in sorted(held.items()):
        node = ray.nodes.get(node_id)
        if node is None:
            continue  # not alive in Ray: ray_matches says so
        beyond = sorted(g for g in gpus if g < 0 or g >= node.gpus)
        if beyond or len(gpus) > node.gpus:
            out.append(
                Violation(
                    OVER_CAPACITY,
                    f"node {node_id} has {node.gpus} GPUs; jobs {', '.join(jobs[node_id])} hold "
                    f"{len(gpus)}" + (f", among them GPU(s) {beyond} it does not have" if beyond else ""),
                    jobs=tuple(jobs[node_id]),
                    nodes=(node_id,),
                    settles=True,
                )
            )
    return out


def in_region(holding: Iterable[JobRecord], nodes: Mapping[str, Node]) -> list[Violation]:
    """No job with a data region holds GPUs on a node outside it (the node's region as Ray says now)."""
    out: list[Violation] = []
    for rec in holding:
        assert rec.allocation is not None
        want = rec.job.spec.data_region
        if want == ANY:
            continue
        outside = [n for n in rec.allocation.node_ids if n in nodes and nodes[n].region != want]
        if outside:
            where = ", ".join(f"{n} ({nodes[n].region})" for n in outside)
            out.append(
                Violation(
                    OUTSIDE_REGION,
                    f"job {rec.id} (data region {want}) holds GPUs on {where}",
                    jobs=(rec.id,),
                    nodes=tuple(outside),
                    settles=True,
                )
            )
    return out


def ray_matches(holding: Sequence[JobRecord], ray: RayState) -> list[Violation]:
    """Ray holds what the store expects and nothing else of Corral's:

    - every Corral placement group and worker actor is the current attempt of a job holding GPUs;
    - a RUNNING job not being stopped has its placement group created on its nodes and one actor per
      rank (a STARTING job's may still be on the way; a stopping one's may be going);
    - per node, the GPUs Ray has in use lie between what the store's settled jobs must hold there
      (RUNNING, not stopping) and what all its jobs may hold, and a node holding GPUs is alive.
    """
    expected = {(r.id, r.job.restart_count): r for r in holding}
    out: list[Violation] = []
    for group in ray.groups:
        if (group.job_id, group.attempt) not in expected:
            out.append(
                Violation(
                    UNEXPECTED_PLACEMENT_GROUP,
                    f"placement group {group.name} ({group.state}) is not expected by the store: "
                    f"job {group.job_id} {_attempt_words(group.job_id, group.attempt, holding)}",
                    jobs=(group.job_id,),
                    nodes=tuple(sorted({n for n, _ in group.bundles if n})),
                    name=group.name,
                    settles=True,
                )
            )
    for actor in ray.actors:
        if (actor.job_id, actor.attempt) not in expected:
            out.append(
                Violation(
                    UNEXPECTED_ACTOR,
                    f"actor {actor.name} is not expected by the store: "
                    f"job {actor.job_id} {_attempt_words(actor.job_id, actor.attempt, holding)}",
                    jobs=(actor.job_id,),
                    name=actor.name,
                    settles=True,
                )
            )
    groups = {(g.job_id, g.attempt): g for g in ray.groups}
    ranks: dict[tuple[str, int], set[int]] = {}
    for actor in ray.actors:
        ranks.setdefault((actor.job_id, actor.attempt), set()).add(actor.rank)
    for (job_id, attempt), rec in expected.items():
        if rec.state is not JobState.RUNNING or rec.stop_reason is not None:
            continue
        assert rec.allocation is not None
        pg = groups.get((job_id, attempt))
        if pg is None:
            out.append(
                Violation(
                    MISSING_PLACEMENT_GROUP,
                    f"job {job_id} is RUNNING (attempt {attempt}) but Ray has no placement group for it",
                    jobs=(job_id,),
                    nodes=rec.allocation.node_ids,
                    settles=True,
                )
            )
            continue
        problems = []
        placed = sorted(n for n, _ in pg.bundles if n)
        if pg.state != "CREATED" or placed != sorted(rec.allocation.node_ids):
            problems.append(
                f"its placement group {pg.name} is {pg.state} on {placed or 'no node'}, "
                f"not on {sorted(rec.allocation.node_ids)}"
            )
        missing = sorted(set(range(rec.job.spec.nodes)) - ranks.get((job_id, attempt), set()))
        if missing:
            problems.append(f"rank(s) {missing} have no worker actor")
        if problems:
            out.append(
                Violation(
                    GANG_PARTIAL,
                    f"job {job_id} is RUNNING but " + "; ".join(problems),
                    jobs=(job_id,),
                    nodes=rec.allocation.node_ids,
                    settles=True,
                )
            )
    out += _node_usage(holding, ray)
    return out


def _node_usage(holding: Sequence[JobRecord], ray: RayState) -> list[Violation]:
    sure: dict[str, int] = {}
    maybe: dict[str, int] = {}
    jobs: dict[str, list[str]] = {}
    for rec in holding:
        assert rec.allocation is not None
        settled = rec.state is JobState.RUNNING and rec.stop_reason is None
        for na in rec.allocation.nodes:
            target = sure if settled else maybe
            target[na.node] = target.get(na.node, 0) + len(na.gpus)
            jobs.setdefault(na.node, []).append(rec.id)
    out: list[Violation] = []
    for node_id in sorted(sure.keys() | maybe.keys() | ray.used_gpus.keys()):
        low, high = sure.get(node_id, 0), sure.get(node_id, 0) + maybe.get(node_id, 0)
        holders = tuple(jobs.get(node_id, ()))
        if node_id not in ray.nodes:
            if high:
                out.append(
                    Violation(
                        NODE_MISMATCH,
                        f"node {node_id} is not alive in Ray, yet jobs {', '.join(holders)} "
                        f"hold {high} GPUs there",
                        jobs=holders,
                        nodes=(node_id,),
                        settles=True,
                    )
                )
            continue
        used = ray.used_gpus.get(node_id, 0.0)
        grouped = used if ray.grouped_gpus is None else ray.grouped_gpus.get(node_id, 0.0)
        if used - 1e-6 > high and grouped - 1e-6 <= high:
            # Corral holds GPUs only through placement groups, and the groups there hold no more
            # than Corral's jobs may: the excess is held by no group, so it is not Corral's.
            excess = used - high
            out.append(
                Violation(
                    GPUS_OUTSIDE_PLACEMENT_GROUPS,
                    f"node {node_id}: Ray has {excess:g} more GPUs in use than Corral's jobs "
                    f"({', '.join(holders) or 'none'}) may hold, and no placement group holds them "
                    "(a Ray task or actor started outside Corral, or a reservation Ray kept when "
                    "a placement group was removed while being scheduled: a Ray bug, see README "
                    "Known limits); Corral places as if they were taken; free them by stopping "
                    "that workload or restarting the node's raylet",
                    jobs=holders,
                    nodes=(node_id,),
                    gpus=excess,
                    settles=True,
                )
            )
            continue
        if used + 1e-6 < low or used - 1e-6 > high:
            where = (
                "more than Corral allocated (held outside Corral?)"
                if used > high
                else "fewer than Corral allocated"
            )
            counted = f"{low}" if low == high else f"{low} to {high}"
            out.append(
                Violation(
                    NODE_MISMATCH,
                    f"node {node_id}: Ray has {used:g} GPUs in use, {where}: Corral's jobs "
                    f"({', '.join(holders) or 'none'}) account for {counted}",
                    jobs=holders,
                    nodes=(node_id,),
                    settles=True,
                )
            )
    return out


def _attempt_words(job_id: str, attempt: int, holding: Sequence[JobRecord]) -> str:
    current = next((r for r in holding if r.id == job_id), None)
    if current is None:
        return f"holds no GPUs (attempt {attempt} is left over)"
    return f"is at attempt {current.job.restart_count}, not {attempt}"


def _id_order(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (0, job_id)


def _gpus(gpus: set[tuple[str, int]]) -> str:
    shown = sorted(gpus)[:_SHOWN]
    more = f" and {len(gpus) - len(shown)} more" if len(gpus) > len(shown) else ""
    return ", ".join(f"{n}:{g}" for n, g in shown) + more


def _ids(ids: Sequence[str]) -> str:
    more = f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else ""
    return ", ".join(ids[:_SHOWN]) + more
