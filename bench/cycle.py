"""Decision speed: how long one decide() cycle takes on a big synthetic cluster.

    .venv/bin/python bench/cycle.py [--nodes 10000] [--pending 50000] [--queues 50]
                                    [--repeat 5] [--seed 0] [--json] [--no-growth]

The world (seeded, reproducible):
  * nodes: racks of 32 nodes × 8 GPUs (NVLink domains of 8 nodes); rack i lies in region
    REGIONS[i % 4] and holds GPU type GPU_TYPES[(i // 4) % 2], so there are 8 pools; 0.5% of the
    nodes are down and 0.5% draining.
  * queues: `--queues` queues in cohorts of 10, nominal quotas per GPU type summing exactly to the
    cluster's GPUs of that type (random weights); half have a borrowing limit.
  * running: every pool is packed with jobs (1/2/4/8 GPUs on one node, 2/4/8 whole nodes for
    16/32/64 GPUs), then random jobs are removed until ≤ 90% of its GPUs are held, so the free
    GPUs are scattered as on a real cluster. Every running job has a time limit and started some
    time within it; queues are drawn in proportion to their quota of that GPU type.
  * pending: `--pending` jobs of 1..64 GPUs, priorities low/normal/high (30/60/10%), a region or
    'any', a GPU type or 'any', mostly with time limits, some already run before (LAS levels),
    submitted over the last two days; each queue's list sorted by the policy's `pending_key`.

What is timed (time.perf_counter, or CPU time with --cpu; median of --repeat runs, a gc.collect()
before each):
  (a) full_cycle_s: decide() on that snapshot.
  (b) arrival_cycle_s: decide() after one more job arrives, in steady state. A controller applies
      each cycle's plan before the next, so the "previous" snapshot is (a)'s with its plan applied
      (placements running, preemptions leaving, rejections gone), and the plans of the following
      cycles too, one second apart, until a cycle neither places nor preempts (`settle_rounds`,
      at most 10): the backlog a 1000-job scan depth leaves is drained first. The arrival
      snapshot shares all of that and only copies the one queue's pending list with the new job
      inserted in policy order (bisect). Building it is not timed: the point is decide(), not
      snapshot building.
  (c) completion_cycle_s: the same steady-state snapshot with one random running job gone: its
      GPUs given back with CapacityIndex.release and its queue's usage lowered (not timed either).
  Each repeat uses a different arrival / completion. decide() has no incremental mode: (b) and
  (c) are whole cycles, on the state a controller would really hold at that moment. For
  reference, arrival_on_first_snapshot_s / completion_on_first_snapshot_s time the same change
  applied to (a)'s own snapshot (which still has a backlog to place, so they cost about (a)).
  snapshot_build_s: ClusterSnapshot.build from the plain lists (sorting the pending lists).
  (d) arrival_cycle_live_s / completion_cycle_live_s: the same events, decided as the live
      controller decides them, with the memo its previous cycle left (what decide() derives from
      the running jobs alone, reused while they are the same objects; see incremental). The
      plans must equal (b)'s and (c)'s: the script stops with an error if they do not.

Growth (unless --no-growth): full-cycle time for nodes 1k/5k/10k (pending 50k) and pending
10k/50k/100k (nodes 10k), the ratio per step next to n·log n's, and the exponent of a log-log fit
compared with the slope n·log n has over the same sizes.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from _common import emit_json, fmt_s, growth_verdict, loglog_slope, median, nlogn_slope, timed, use_cpu_time

from scheduler.compiled import build_name
from scheduler.model.cluster import ANY, Node, NodeState
from scheduler.model.job import Job, JobSpec, JobState
from scheduler.model.plan import Allocation, NodeAllocation, Place, Plan, Preempt, Reject, Reserve
from scheduler.model.queue import DEFAULT_PRIORITY_CLASSES, Queue
from scheduler.model.snapshot import ClusterSnapshot, RunningJob
from scheduler.policy.config import POLICY_NAMES, PolicyConfig
from scheduler.policy.decide import decide
from scheduler.policy.order import PendingKey, pending_key

REGIONS = ("us-east", "us-west", "eu-central", "ap-south")
GPU_TYPES = ("H100", "A100")
RACK_NODES = 32
GPUS_PER_NODE = 8
DOMAIN_NODES = 8
TARGET_ALLOCATED = 0.90
COHORT_SIZE = 10
NOW = 10_000_000.0
HOUR = 3600.0

SIZES = (1, 2, 4, 8, 16, 32, 64)
RUNNING_SIZE_WEIGHTS = (20, 12, 12, 26, 14, 10, 6)
PENDING_SIZE_WEIGHTS = (25, 15, 15, 20, 12, 8, 5)
TIME_LIMITS = (1 * HOUR, 4 * HOUR, 12 * HOUR, 24 * HOUR, 72 * HOUR)
PRIORITIES = ("low", "normal", "high")
PRIORITY_WEIGHTS = (30, 60, 10)


@dataclass
class World:
    nodes: list[Node]
    queues: list[Queue]
    running: list[RunningJob]
    pending: list[Job]


def shape(gpus: int) -> tuple[int, int]:
    if gpus <= GPUS_PER_NODE:
        return 1, gpus
    return gpus // GPUS_PER_NODE, GPUS_PER_NODE


# --- the synthetic world ---------------------------------------------------------------------------


def make_nodes(count: int, rng: random.Random) -> list[Node]:
    nodes = []
    for i in range(count):
        r, k = divmod(i, RACK_NODES)
        region = REGIONS[r % len(REGIONS)]
        gpu_type = GPU_TYPES[(r // len(REGIONS)) % len(GPU_TYPES)]
        roll = rng.random()
        state = NodeState.DOWN if roll < 0.005 else NodeState.DRAINING if roll < 0.01 else NodeState.READY
        nodes.append(
            Node(
                id=f"{region}-r{r:04d}-n{k:02d}",
                region=region,
                zone=f"{region}-a",
                rack=f"{region}/r{r:04d}",
                nvlink_domain=f"{region}/r{r:04d}/d{k // DOMAIN_NODES}",
                gpu_type=gpu_type,
                gpus=GPUS_PER_NODE,
                state=state,
            )
        )
    return nodes


def make_queues(count: int, nodes: Sequence[Node], rng: random.Random) -> list[Queue]:
    totals: dict[str, int] = {}
    for n in nodes:
        totals[n.gpu_type] = totals.get(n.gpu_type, 0) + n.gpus
    weights = [rng.uniform(1.0, 10.0) for _ in range(count)]
    quotas: list[dict[str, int]] = [{} for _ in range(count)]
    for gpu_type, total in sorted(totals.items()):
        shares = [int(total * w / sum(weights)) for w in weights]
        for i in range(total - sum(shares)):  # hand out the rounding remainder: sums are exact
            shares[i % count] += 1
        for i, s in enumerate(shares):
            quotas[i][gpu_type] = s
    queues = []
    for i in range(count):
        borrowing = None if i % 2 == 0 else max(8, sum(quotas[i].values()) // 2)
        queues.append(
            Queue(
                name=f"q{i:03d}",
                cohort=f"cohort-{i // COHORT_SIZE}",
                quota=quotas[i],
                borrowing_limit=borrowing,
                weight=rng.choice((1.0, 1.0, 1.0, 2.0)),
            )
        )
    return queues


def _spec(
    rng: random.Random, queue: str, gpus: int, region: str, gpu_type: str, limit: float | None
) -> JobSpec:
    n, g = shape(gpus)
    return JobSpec(
        name="train",
        queue=queue,
        priority=rng.choices(PRIORITIES, PRIORITY_WEIGHTS)[0],
        nodes=n,
        gpus_per_node=g,
        gpu_type=gpu_type,
        data_region=region,
        time_limit_s=limit,
        preemptible=rng.random() < 0.9,
    )


def make_running(nodes: Sequence[Node], queues: Sequence[Queue], rng: random.Random) -> list[RunningJob]:
    """Pack every pool full, then remove random jobs until ≤ 90% of its GPUs are held."""
    by_pool: dict[tuple[str, str], list[Node]] = {}
    for n in nodes:
        if n.state is not NodeState.DOWN:
            by_pool.setdefault(n.pool, []).append(n)
    running: list[RunningJob] = []
    serial = 0
    for pool, members in sorted(by_pool.items()):
        region, gpu_type = pool
        used = [0] * len(members)  # GPUs taken on each node (indices 0..used-1)
        partial: list[int] = []  # nodes with some GPUs free and some taken
        cursor = 0  # next untouched node
        jobs: list[tuple[int, tuple[NodeAllocation, ...]]] = []
        failures = 0
        while failures < 20:
            gpus = rng.choices(SIZES, RUNNING_SIZE_WEIGHTS)[0]
            n, g = shape(gpus)
            chosen: list[int] = []
            if n == 1:
                for idx in partial:
                    if GPUS_PER_NODE - used[idx] >= g:
                        chosen = [idx]
                        break
                if not chosen and cursor < len(members):
                    chosen = [cursor]
                    cursor += 1
            elif cursor + n <= len(members):
                chosen = list(range(cursor, cursor + n))
                cursor += n
            if not chosen:
                failures += 1
                continue
            allocs = []
            for idx in chosen:
                allocs.append(
                    NodeAllocation(node=members[idx].id, gpus=tuple(range(used[idx], used[idx] + g)))
                )
                used[idx] += g
                if used[idx] == GPUS_PER_NODE:
                    if idx in partial:
                        partial.remove(idx)
                elif idx not in partial:
                    partial.append(idx)
            jobs.append((gpus, tuple(allocs)))
        capacity = len(members) * GPUS_PER_NODE
        held = sum(gpus for gpus, _ in jobs)
        rng.shuffle(jobs)
        while jobs and held > TARGET_ALLOCATED * capacity:
            held -= jobs.pop()[0]
        quota_weights = [max(1, q.nominal(gpu_type)) for q in queues]
        for gpus, allocs in jobs:
            queue = rng.choices(queues, quota_weights)[0]
            limit = rng.choice(TIME_LIMITS)
            started = NOW - rng.uniform(0.0, 0.95 * limit)
            spec = _spec(
                rng,
                queue.name,
                gpus,
                region if rng.random() < 0.6 else ANY,
                gpu_type if rng.random() < 0.7 else ANY,
                limit,
            )
            serial += 1
            job = Job(
                id=f"r{serial:07d}",
                spec=spec,
                team=queue.name,
                state=JobState.RUNNING,
                submitted_at=started - rng.uniform(0.0, 2 * HOUR),
                started_at=started,
                first_started_at=started,
                attained_gpu_s=0.0 if rng.random() < 0.8 else rng.uniform(0.0, 50_000.0),
            )
            running.append(RunningJob(job, Allocation(nodes=allocs), pool, started, 1800.0))
    return running


def make_pending_job(
    rng: random.Random,
    serial: int,
    queues: Sequence[Queue],
    queue_weights: Sequence[float],
    pools: Sequence[tuple[str, str]],
    submitted_at: float,
) -> Job:
    queue = rng.choices(queues, queue_weights)[0]
    region, gpu_type = rng.choice(pools)
    gpus = rng.choices(SIZES, PENDING_SIZE_WEIGHTS)[0]
    spec = _spec(
        rng,
        queue.name,
        gpus,
        region if rng.random() < 0.6 else ANY,
        gpu_type if rng.random() < 0.6 else ANY,
        rng.choice(TIME_LIMITS) if rng.random() < 0.9 else None,
    )
    requeued = rng.random() < 0.1
    return Job(
        id=f"p{serial:07d}",
        spec=spec,
        team=queue.name,
        submitted_at=submitted_at,
        restart_count=1 if requeued else 0,
        preemption_count=1 if requeued else 0,
        attained_gpu_s=rng.uniform(0.0, 100_000.0) if requeued else 0.0,
    )


def make_world(nodes: int, pending: int, queues: int, seed: int) -> World:
    rng = random.Random(seed)
    node_list = make_nodes(nodes, rng)
    queue_list = make_queues(queues, node_list, rng)
    running = make_running(node_list, queue_list, rng)
    pools = sorted({n.pool for n in node_list})
    queue_weights = [1.0 / (i + 1) ** 0.5 for i in range(len(queue_list))]  # some queues busier
    jobs = [
        make_pending_job(rng, i, queue_list, queue_weights, pools, NOW - rng.uniform(0.0, 48 * HOUR))
        for i in range(pending)
    ]
    return World(node_list, queue_list, running, jobs)


def build_snapshot(world: World, key: PendingKey) -> ClusterSnapshot:
    return ClusterSnapshot.build(
        world.nodes,
        world.queues,
        DEFAULT_PRIORITY_CLASSES,
        world.pending,
        world.running,
        usage_history={q.name: 1000.0 * i for i, q in enumerate(world.queues)},
        pending_key=key,
    )


# --- incremental snapshots (not timed) ----------------------------------------------------------


def settle(snapshot: ClusterSnapshot, plan: Plan, now: float) -> ClusterSnapshot:
    """The snapshot a controller holds after applying `plan`: what the next cycle starts from."""
    done: set[str] = set()
    capacity = snapshot.capacity
    running = dict(snapshot.running)
    usage = {q: dict(u) for q, u in snapshot.queue_usage.items()}
    by_id = {j.id: j for jobs in snapshot.pending.values() for j in jobs}
    for d in plan.decisions:
        if isinstance(d, Place):
            job = by_id[d.job_id]
            capacity = capacity.allocate(d.allocation)
            pool = snapshot.nodes[d.allocation.nodes[0].node].pool
            started = job.transition(JobState.STARTING, started_at=now, first_started_at=now)
            running[job.id] = RunningJob(started, d.allocation, pool, now, 1800.0)
            per_type = usage.setdefault(job.spec.queue, {})
            per_type[pool.gpu_type] = per_type.get(pool.gpu_type, 0) + d.allocation.gpus
            done.add(job.id)
        elif isinstance(d, Preempt):
            r = running[d.job_id]
            leaving = r.job.transition(JobState.PREEMPTING)
            running[d.job_id] = RunningJob(
                leaving, r.allocation, r.pool, r.started_at, r.checkpoint_interval_s
            )
        elif isinstance(d, Reject):
            done.add(d.job_id)
    pending = {
        q: [j for j in jobs if j.id not in done] if any(j.id in done for j in jobs) else jobs
        for q, jobs in snapshot.pending.items()
    }
    return dataclasses.replace(
        snapshot, capacity=capacity, running=running, pending=pending, queue_usage=usage
    )


def with_arrival(snapshot: ClusterSnapshot, job: Job, key: PendingKey) -> ClusterSnapshot:
    """`snapshot` plus one pending job: only that job's queue list is copied (sorted insert)."""
    queue = job.spec.queue
    jobs = list(snapshot.pending.get(queue, ()))
    bisect.insort(jobs, job, key=key)
    pending = dict(snapshot.pending)
    pending[queue] = jobs
    return dataclasses.replace(snapshot, pending=pending)


def with_completion(snapshot: ClusterSnapshot, job_id: str) -> ClusterSnapshot:
    """`snapshot` with one running job gone: its GPUs released and its queue's usage lowered."""
    r = snapshot.running[job_id]
    running = dict(snapshot.running)
    del running[job_id]
    usage = dict(snapshot.queue_usage)
    per_type = dict(usage[r.queue])
    per_type[r.gpu_type] -= r.gpus
    usage[r.queue] = per_type
    return dataclasses.replace(
        snapshot, capacity=snapshot.capacity.release(r.allocation), running=running, queue_usage=usage
    )


# --- measurements -------------------------------------------------------------------------------


def plan_counts(plan: Plan) -> dict[str, int]:
    return {
        "examined": plan.examined,
        "place": sum(isinstance(d, Place) for d in plan.decisions),
        "preempt": sum(isinstance(d, Preempt) for d in plan.decisions),
        "reserve": sum(isinstance(d, Reserve) for d in plan.decisions),
        "reject": sum(isinstance(d, Reject) for d in plan.decisions),
    }


def time_full(snapshot: ClusterSnapshot, config: PolicyConfig, repeat: int) -> tuple[float, Plan]:
    runs = [timed(lambda: decide(snapshot, config, NOW)) for _ in range(repeat)]
    return median([s for s, _ in runs]), runs[0][1]


def settle_fully(
    snapshot: ClusterSnapshot, plan: Plan, config: PolicyConfig, now: float, rounds: int = 10
) -> tuple[ClusterSnapshot, float, int]:
    """Apply plans one cycle (1 s) apart until a cycle neither places nor preempts (at most `rounds`)."""
    done = 0
    while done < rounds:
        snapshot = settle(snapshot, plan, now)
        now += 1.0
        done += 1
        plan = decide(snapshot, config, now)
        if not any(isinstance(d, Place | Preempt) for d in plan.decisions):
            break
    return snapshot, now, done


def incremental(
    base: ClusterSnapshot,
    world: World,
    config: PolicyConfig,
    key: PendingKey,
    now: float,
    repeat: int,
    seed: int,
    live: bool = False,
) -> tuple[list[tuple[float, Plan]], list[tuple[float, Plan]]]:
    """(arrival runs, completion runs) on `base`, one different job arriving / leaving per run.

    `live`: the same events (same seed), decided as the live controller decides them, with the
    memo its previous cycle left (ClusterSnapshot.memo, warmed by one decide() on `base`). After
    an arrival the running jobs are the same objects (same running version: the derived values
    are reused); after a completion they are not (a new version: only the pending jobs' facts
    are). The plans must be those without it: measure() checks it."""
    if live:
        base = dataclasses.replace(base, running_version=1, memo={})
        decide(base, config, now - 1.0)
    rng = random.Random(seed)
    pools = sorted(base.pool_shapes)
    arrivals = []
    for i in range(repeat):
        job = make_pending_job(rng, 10_000_000 + i, world.queues, [1.0] * len(world.queues), pools, now)
        arrival = with_arrival(base, job, key)
        arrivals.append(timed(lambda s=arrival: decide(s, config, now)))
    leavers = sorted(rid for rid, r in base.running.items() if not r.preempting)
    completions = []
    for version, rid in enumerate(rng.sample(leavers, min(repeat, len(leavers))), start=2):
        completion = with_completion(base, rid)
        if live:
            completion = dataclasses.replace(completion, running_version=version)
        completions.append(timed(lambda s=completion: decide(s, config, now)))
    return arrivals, completions


def _med(runs: list[tuple[float, Plan]]) -> float:
    return median([s for s, _ in runs]) if runs else 0.0


def measure(args: argparse.Namespace, config: PolicyConfig, key: PendingKey) -> dict[str, Any]:
    gen_s, world = timed(lambda: make_world(args.nodes, args.pending, args.queues, args.seed))
    build_s, snapshot = timed(lambda: build_snapshot(world, key))
    full_s, plan = time_full(snapshot, config, args.repeat)

    settled, now, rounds = settle_fully(snapshot, plan, config, NOW)
    arrivals, completions = incremental(settled, world, config, key, now + 1.0, args.repeat, args.seed + 1)
    live_arrivals, live_completions = incremental(
        settled, world, config, key, now + 1.0, args.repeat, args.seed + 1, live=True
    )
    for (_, plain), (_, live) in zip(arrivals + completions, live_arrivals + live_completions, strict=True):
        if plain.decisions != live.decisions or plain.pending != live.pending:
            raise SystemExit("error: a cycle with the controller's memo decided differently than without it")
    raw_arrivals, raw_completions = incremental(
        snapshot, world, config, key, NOW + 1.0, args.repeat, args.seed + 2
    )

    allocated = sum(r.gpus for r in world.running)
    total = sum(n.gpus for n in world.nodes)
    steady_running = list(settled.running.values())
    return {
        "policy": config.name,
        "decision_code": build_name(),
        "nodes": args.nodes,
        "gpus": total,
        "pending": args.pending,
        "queues": args.queues,
        "running": len(world.running),
        "allocated_fraction": allocated / total if total else 0.0,
        "repeat": args.repeat,
        "clock": "cpu" if args.cpu else "wall",
        "generate_s": gen_s,
        "snapshot_build_s": build_s,
        "full_cycle_s": full_s,
        "arrival_cycle_s": _med(arrivals),
        "completion_cycle_s": _med(completions),
        "arrival_cycle_live_s": _med(live_arrivals),
        "completion_cycle_live_s": _med(live_completions),
        "settle_rounds": rounds,
        "steady_state": {
            "pending": settled.pending_count,
            "running": len(steady_running),
            "preempting": sum(r.preempting for r in steady_running),
            "free_gpus": settled.capacity.free_gpus(),
        },
        "arrival_on_first_snapshot_s": _med(raw_arrivals),
        "completion_on_first_snapshot_s": _med(raw_completions),
        "full_plan": plan_counts(plan),
        "arrival_plan": plan_counts(arrivals[0][1]),
        "completion_plan": plan_counts(completions[0][1]) if completions else {},
    }


def full_cycle_at(
    nodes: int, pending: int, args: argparse.Namespace, config: PolicyConfig, key: PendingKey
) -> float:
    world = make_world(nodes, pending, args.queues, args.seed)
    snapshot = build_snapshot(world, key)
    return time_full(snapshot, config, max(1, min(args.repeat, 3)))[0]


def growth(
    args: argparse.Namespace, config: PolicyConfig, key: PendingKey, known: dict[tuple[int, int], float]
) -> dict[str, Any]:
    def at(nodes: int, pending: int) -> float:
        if (nodes, pending) not in known:
            known[(nodes, pending)] = full_cycle_at(nodes, pending, args, config, key)
        return known[(nodes, pending)]

    node_sizes, pending_sizes = args.growth_nodes, args.growth_pending
    by_nodes = [[n, at(n, args.growth_fixed_pending)] for n in node_sizes]
    by_pending = [[p, at(args.growth_fixed_nodes, p)] for p in pending_sizes]
    return {
        "fixed_pending": args.growth_fixed_pending,
        "fixed_nodes": args.growth_fixed_nodes,
        "nodes": by_nodes,
        "pending": by_pending,
        "nodes_exponent": loglog_slope([(n, s) for n, s in by_nodes]),
        "pending_exponent": loglog_slope([(p, s) for p, s in by_pending]),
        "nlogn_exponent_nodes": nlogn_slope(node_sizes),
        "nlogn_exponent_pending": nlogn_slope(pending_sizes),
    }


# --- output ---------------------------------------------------------------------------------------


def _verdict(value: float, target: float) -> str:
    return f"OK (target ≤ {fmt_s(target)})" if value <= target else f"MISSED (target ≤ {fmt_s(target)})"


def report(result: dict[str, Any]) -> None:
    print(
        f"Corral decide() on {result['nodes']} nodes ({result['gpus']} GPUs, "
        f"{result['allocated_fraction']:.1%} allocated by {result['running']} running jobs), "
        f"{result['pending']} pending jobs, {result['queues']} queues; policy {result['policy']}; "
        f"median of {result['repeat']} ({result['clock']} time); decision code {result['decision_code']}"
    )
    print(f"  generate world       {fmt_s(result['generate_s'])}")
    print(f"  snapshot build       {fmt_s(result['snapshot_build_s'])}")
    for label, key, target, plan in (
        ("full cycle", "full_cycle_s", 1.0, "full_plan"),
        ("after one arrival", "arrival_cycle_s", 0.05, "arrival_plan"),
        ("after one completion", "completion_cycle_s", 0.05, "completion_plan"),
        ("  … live controller", "arrival_cycle_live_s", 0.05, "arrival_plan"),
        ("  … live controller", "completion_cycle_live_s", 0.05, "completion_plan"),
    ):
        counts = ", ".join(f"{k} {v}" for k, v in result[plan].items())
        print(f"  {label:<20} {fmt_s(result[key]):>10}  {_verdict(result[key], target)}  [{counts}]")
        if key == "full_cycle_s":
            st = result["steady_state"]
            print(
                f"  -- steady state after {result['settle_rounds']} applied cycles: {st['pending']} pending, "
                f"{st['running']} running ({st['preempting']} preempting), {st['free_gpus']} GPUs free"
            )
    print(
        f"  (on the first snapshot, unsettled: arrival {fmt_s(result['arrival_on_first_snapshot_s'])}, "
        f"completion {fmt_s(result['completion_on_first_snapshot_s'])})"
    )
    g = result.get("growth")
    if not g:
        return
    for axis, fixed, ref_key in (
        ("nodes", f"pending {g['fixed_pending']}", "nlogn_exponent_nodes"),
        ("pending", f"nodes {g['fixed_nodes']}", "nlogn_exponent_pending"),
    ):
        print(f"Growth with {axis} ({fixed}):")
        prev: list[float] | None = None
        for n, s in g[axis]:
            step = ""
            if prev is not None:
                nlogn = (n * math.log(n)) / (prev[0] * math.log(prev[0]))
                step = f"  ×{s / prev[1]:.2f} (n log n: ×{nlogn:.2f})"
            print(f"  {axis} {n:>7}: {fmt_s(s):>10}{step}")
            prev = [n, s]
        print(f"  {growth_verdict(g[f'{axis}_exponent'], g[ref_key])}")


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--pending", type=int, default=50_000)
    p.add_argument("--queues", type=int, default=50)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy", choices=POLICY_NAMES, default="corral")
    p.add_argument("--json", action="store_true", help="print only JSON")
    p.add_argument("--no-growth", action="store_true", help="skip the growth runs")
    p.add_argument("--cpu", action="store_true", help="time CPU seconds (shared machine), not wall")
    p.add_argument("--growth-nodes", type=_sizes, default=[1000, 5000, 10_000], help="e.g. 1000,5000,10000")
    p.add_argument("--growth-pending", type=_sizes, default=[10_000, 50_000, 100_000])
    p.add_argument("--growth-fixed-nodes", type=int, default=10_000)
    p.add_argument("--growth-fixed-pending", type=int, default=50_000)
    args = p.parse_args(argv)
    if min(args.nodes, args.pending, args.queues, args.repeat) < 1:
        p.error("--nodes, --pending, --queues and --repeat must be ≥ 1")
    if args.cpu:
        use_cpu_time()

    config = PolicyConfig(name=args.policy)
    key = pending_key(config, {pc.name: pc.value for pc in DEFAULT_PRIORITY_CLASSES})
    result = measure(args, config, key)
    if not args.no_growth:
        known = {(args.nodes, args.pending): result["full_cycle_s"]} if args.repeat >= 3 else {}
        result["growth"] = growth(args, config, key, known)
    if args.json:
        emit_json(result)
    else:
        report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
